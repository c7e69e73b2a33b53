// Package tap is a minimal stand-in for github.com/mndrix/tap-go, which Debian
// does not package: runtime-tools' validation programs and runtimetest need only
// this API to print TAP version 13. Written for Kettle's conformance tests; it is
// used only when no real tap-go is found on the GOPATH.
package tap

import (
	"fmt"
	"io"
	"os"
	"strings"

	yaml "gopkg.in/yaml.v2"
)

// T is a TAP producer: each check prints one numbered line.
type T struct {
	nextTestNumber int
	// TODO marks the following checks as TODO when set (see Todo).
	TODO   bool
	Writer io.Writer
}

// New starts a TAP stream on stdout.
func New() *T {
	return &T{nextTestNumber: 1, Writer: os.Stdout}
}

func (t *T) printf(format string, a ...interface{}) {
	w := t.Writer
	if w == nil {
		w = os.Stdout
	}
	fmt.Fprintf(w, format, a...)
}

// Header prints the version line and, when testCount > 0, the plan.
func (t *T) Header(testCount int) {
	t.printf("TAP version 13\n")
	if testCount > 0 {
		t.printf("1..%d\n", testCount)
	}
}

// Ok prints one result line.
func (t *T) Ok(test bool, description string) {
	ok := "ok"
	if !test {
		ok = "not ok"
	}
	if t.TODO {
		t.printf("%s %d # TODO %s\n", ok, t.nextTestNumber, description)
	} else {
		t.printf("%s %d - %s\n", ok, t.nextTestNumber, description)
	}
	t.nextTestNumber++
}

// Fail prints a failing result.
func (t *T) Fail(description string) { t.Ok(false, description) }

// Pass prints a passing result.
func (t *T) Pass(description string) { t.Ok(true, description) }

// Check runs a boolean function; it exists for API compatibility only.
func (t *T) Check(function interface{}, description string) {
	f, ok := function.(func() bool)
	t.Ok(ok && f(), description)
}

// Count returns how many results were printed.
func (t *T) Count() int { return t.nextTestNumber - 1 }

// AutoPlan prints the plan from the number of results so far.
func (t *T) AutoPlan() { t.printf("1..%d\n", t.Count()) }

// Todo returns a producer sharing the numbering whose results are TODO.
func (t *T) Todo() *T {
	return &T{nextTestNumber: t.nextTestNumber, TODO: true, Writer: t.Writer}
}

// Skip prints count skipped results.
func (t *T) Skip(count int, description string) {
	for i := 0; i < count; i++ {
		t.printf("ok %d # SKIP %s\n", t.nextTestNumber, description)
		t.nextTestNumber++
	}
}

// Diagnostic prints a comment, one "# " line per line of message.
func (t *T) Diagnostic(message string) {
	for _, line := range strings.Split(strings.TrimRight(message, "\n"), "\n") {
		t.printf("# %s\n", line)
	}
}

// Diagnosticf is Diagnostic with formatting.
func (t *T) Diagnosticf(format string, a ...interface{}) {
	t.Diagnostic(fmt.Sprintf(format, a...))
}

// YAML prints a YAML block attached to the previous result.
func (t *T) YAML(message interface{}) error {
	out, err := yaml.Marshal(message)
	if err != nil {
		return err
	}
	t.printf("  ---\n")
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.printf("  %s\n", line)
	}
	t.printf("  ...\n")
	return nil
}
