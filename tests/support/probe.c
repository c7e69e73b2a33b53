/*
 * probe: a static program placed in test bundles that reports, as JSON on stdout, what a
 * process sees from inside a container, and tries actions reporting the errno they fail with.
 *
 *   probe [report]                 everything below, one JSON object
 *   probe try mkdir PATH           {"ok":bool,"errno":N,"error":"EPERM"}
 *   probe try open PATH r|w|rw|path
 *   probe try write PATH           open O_WRONLY|O_CREAT|O_TRUNC and write one byte
 *   probe try mknod PATH c|b MAJOR MINOR
 *   probe try syscall NAME|NUMBER  raw syscall with zero arguments (mkdir/mkdirat get a path)
 *   probe try sethostname NAME
 *   probe try setuid UID
 *   probe try chown PATH UID GID
 *   probe try kill PID SIG
 *   probe cve-watch STOPFILE       until STOPFILE exists (at most 120 s), watches processes
 *                                  appearing in the pid namespace and tries to open their
 *                                  executable and files for writing (CVE-2019-5736 class)
 *
 * Built by the test suite with `gcc -static -O2`.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static int first_field = 1;

static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        default:
            if (*p < 0x20 || *p >= 0x7f)
                printf("\\u%04x", *p);
            else
                putchar(*p);
        }
    }
    putchar('"');
}

static void key(const char *k) {
    if (!first_field) putchar(',');
    first_field = 0;
    json_str(k);
    putchar(':');
}

static void kv_str(const char *k, const char *v) { key(k); if (v) json_str(v); else fputs("null", stdout); }
static void kv_int(const char *k, long long v) { key(k); printf("%lld", v); }

static char *read_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap) { cap *= 2; buf = realloc(buf, cap); }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return buf;
}

/* The value of "Name:\t..." in /proc/self/status, or NULL. */
static char *status_field(const char *status, const char *name) {
    static char out[256];
    size_t nl = strlen(name);
    for (const char *p = status; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ' || *p == '\t') p++;
            size_t i = 0;
            while (p[i] && p[i] != '\n' && i < sizeof out - 1) { out[i] = p[i]; i++; }
            out[i] = 0;
            return out;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

static void emit_lines(const char *k, const char *text) {
    key(k);
    if (!text) { fputs("null", stdout); return; }
    putchar('[');
    int first = 1;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *line = strndup(p, n);
        if (!first) putchar(',');
        first = 0;
        json_str(line);
        free(line);
        if (!e) break;
        p = e + 1;
    }
    putchar(']');
}

static const struct { const char *name; int res; } rlimits[] = {
    {"RLIMIT_AS", RLIMIT_AS}, {"RLIMIT_CORE", RLIMIT_CORE}, {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA}, {"RLIMIT_FSIZE", RLIMIT_FSIZE}, {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE}, {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS}, {"RLIMIT_RTPRIO", RLIMIT_RTPRIO}, {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING}, {"RLIMIT_STACK", RLIMIT_STACK},
};

static const char *namespaces[] = {"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children",
                                   "time", "time_for_children", "user", "uts"};

static void report(void) {
    char *status = read_file("/proc/self/status");
    printf("{");
    kv_int("pid", getpid());
    kv_int("ppid", getppid());
    kv_int("uid", getuid());
    kv_int("gid", getgid());
    kv_int("euid", geteuid());
    kv_int("egid", getegid());
    gid_t groups[256];
    int ng = getgroups(256, groups);
    key("groups");
    putchar('[');
    for (int i = 0; i < ng; i++) printf(i ? ",%u" : "%u", groups[i]);
    putchar(']');
    static const char *status_keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                        "NoNewPrivs", "Seccomp", "Umask", "Groups"};
    for (size_t i = 0; i < sizeof status_keys / sizeof *status_keys; i++)
        kv_str(status_keys[i], status ? status_field(status, status_keys[i]) : NULL);
    mode_t m = umask(0);
    umask(m);
    kv_int("umask", m);
    char cwd[4096];
    kv_str("cwd", getcwd(cwd, sizeof cwd) ? cwd : NULL);
    struct utsname u;
    uname(&u);
    kv_str("hostname", u.nodename);
    kv_str("domainname", u.domainname);
    key("rlimits");
    putchar('{');
    for (size_t i = 0; i < sizeof rlimits / sizeof *rlimits; i++) {
        struct rlimit rl;
        getrlimit(rlimits[i].res, &rl);
        if (i) putchar(',');
        json_str(rlimits[i].name);
        printf(":[%lld,%lld]", rl.rlim_cur == RLIM_INFINITY ? -1LL : (long long)rl.rlim_cur,
               rl.rlim_max == RLIM_INFINITY ? -1LL : (long long)rl.rlim_max);
    }
    putchar('}');
    char *oom = read_file("/proc/self/oom_score_adj");
    kv_int("oom_score_adj", oom ? atoll(oom) : -100000);
    key("ns");
    putchar('{');
    int firstns = 1;
    for (size_t i = 0; i < sizeof namespaces / sizeof *namespaces; i++) {
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/proc/self/ns/%s", namespaces[i]);
        if (stat(path, &st) != 0) continue;
        if (!firstns) putchar(',');
        firstns = 0;
        json_str(namespaces[i]);
        printf(":%llu", (unsigned long long)st.st_ino);
    }
    putchar('}');
    kv_str("uid_map", read_file("/proc/self/uid_map"));
    kv_str("gid_map", read_file("/proc/self/gid_map"));
    kv_str("setgroups", read_file("/proc/self/setgroups"));
    kv_str("cgroup", read_file("/proc/self/cgroup"));
    emit_lines("mountinfo", read_file("/proc/self/mountinfo"));
    key("fds");
    putchar('{');
    DIR *d = opendir("/proc/self/fd");
    int dfd = d ? dirfd(d) : -1, firstfd = 1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || atoi(de->d_name) == dfd) continue;
        char path[300], target[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        if (!firstfd) putchar(',');
        firstfd = 0;
        json_str(de->d_name);
        putchar(':');
        json_str(target);
    }
    if (d) closedir(d);
    putchar('}');
    extern char **environ;
    key("env");
    putchar('[');
    for (char **e = environ; *e; e++) { if (e != environ) putchar(','); json_str(*e); }
    putchar(']');
    kv_int("personality", personality(0xffffffff));
    kv_int("ioprio", syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0));
    printf("}\n");
}

static void result(int rc) {
    int err = errno;
    printf("{\"ok\":%s,\"errno\":%d,\"error\":", rc == 0 ? "true" : "false", rc == 0 ? 0 : err);
    json_str(rc == 0 ? "" : strerrorname_np(err) ? strerrorname_np(err) : "?");
    printf("}\n");
}

static const struct { const char *name; long nr; } syscalls[] = {
    {"getpid", SYS_getpid}, {"mkdir", SYS_mkdir}, {"mkdirat", SYS_mkdirat},
    {"chroot", SYS_chroot}, {"unshare", SYS_unshare}, {"ptrace", SYS_ptrace},
    {"personality", SYS_personality}, {"sethostname", SYS_sethostname}, {"mount", SYS_mount},
    {"umount2", SYS_umount2}, {"swapon", SYS_swapon}, {"syslog", SYS_syslog},
    {"acct", SYS_acct}, {"settimeofday", SYS_settimeofday}, {"getcwd", SYS_getcwd},
    {"uname", SYS_uname}, {"sync", SYS_sync}, {"getuid", SYS_getuid},
};

static int try_syscall(const char *name) {
    long nr = -1;
    for (size_t i = 0; i < sizeof syscalls / sizeof *syscalls; i++)
        if (strcmp(syscalls[i].name, name) == 0) nr = syscalls[i].nr;
    if (nr < 0) {
        char *end;
        nr = strtol(name, &end, 10);
        if (*end || nr < 0) { fprintf(stderr, "probe: unknown syscall %s\n", name); exit(2); }
    }
    long rc;
    if (nr == SYS_mkdir)
        rc = syscall(nr, "/tmp/probe-syscall-dir", 0755);
    else if (nr == SYS_mkdirat)
        rc = syscall(nr, AT_FDCWD, "/tmp/probe-syscall-dir", 0755);
    else if (nr == SYS_personality)
        rc = syscall(nr, 0xffffffffUL);
    else if (nr == SYS_getcwd) {
        char buf[4096];
        rc = syscall(nr, buf, sizeof buf);
    } else if (nr == SYS_uname) {
        struct utsname u;
        rc = syscall(nr, &u);
    } else
        rc = syscall(nr, 0, 0, 0, 0, 0, 0);
    return rc < 0 ? -1 : 0;
}

static int try_action(int argc, char **argv) {
    if (argc < 1) return -2;
    const char *op = argv[0];
    if (strcmp(op, "mkdir") == 0 && argc == 2) return (int)syscall(SYS_mkdir, argv[1], 0755) < 0 ? -1 : 0;
    if (strcmp(op, "open") == 0 && argc == 3) {
        int flags = strcmp(argv[2], "w") == 0 ? O_WRONLY : strcmp(argv[2], "rw") == 0 ? O_RDWR
                    : strcmp(argv[2], "path") == 0 ? O_PATH : O_RDONLY;
        int fd = open(argv[1], flags | O_CLOEXEC);
        if (fd < 0) return -1;
        close(fd);
        return 0;
    }
    if (strcmp(op, "write") == 0 && argc == 2) {
        int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return -1;
        ssize_t n = write(fd, "x", 1);
        int err = errno;
        close(fd);
        errno = err;
        return n == 1 ? 0 : -1;
    }
    if (strcmp(op, "mknod") == 0 && argc == 5) {
        mode_t type = argv[2][0] == 'b' ? S_IFBLK : S_IFCHR;
        return mknod(argv[1], type | 0600, makedev(atoi(argv[3]), atoi(argv[4])));
    }
    if (strcmp(op, "syscall") == 0 && argc == 2) return try_syscall(argv[1]);
    if (strcmp(op, "sethostname") == 0 && argc == 2) return sethostname(argv[1], strlen(argv[1]));
    if (strcmp(op, "setuid") == 0 && argc == 2) return setuid((uid_t)atoi(argv[1]));
    if (strcmp(op, "chown") == 0 && argc == 4) return chown(argv[1], atoi(argv[2]), atoi(argv[3]));
    if (strcmp(op, "kill") == 0 && argc == 3) return kill(atoi(argv[1]), atoi(argv[2]));
    return -2;
}

/* ---- cve-watch ------------------------------------------------------------------------ */

#define MAX_SEEN 4096
static int seen[MAX_SEEN], nseen;
static int exe_paths[MAX_SEEN], npaths; /* O_PATH fds of foreign executables, reopened later */
static int exe_pids[MAX_SEEN];
static char findings[65536];
static size_t findings_len;
static char seen_json[65536];
static size_t seen_len;

static void finding(const char *fmt, int pid, const char *what) {
    if (findings_len > sizeof findings - 512) return;
    findings_len += (size_t)snprintf(findings + findings_len, sizeof findings - findings_len,
                                     "%s\"", findings_len ? "," : "");
    char desc[4200];
    snprintf(desc, sizeof desc, fmt, pid, what);
    for (char *p = desc; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '?';
    findings_len += (size_t)snprintf(findings + findings_len, sizeof findings - findings_len,
                                     "%s\"", desc);
}

static int is_seen(int pid) {
    for (int i = 0; i < nseen; i++) if (seen[i] == pid) return 1;
    return 0;
}

static void inspect(int pid, const struct stat *myroot) {
    char path[128], target[4096];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    ssize_t n = readlink(path, target, sizeof target - 1);
    int rl_errno = n < 0 ? errno : 0;
    target[n < 0 ? 0 : n] = 0;
    if (seen_len < sizeof seen_json - 4400) {
        for (char *p = target; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '?';
        seen_len += (size_t)snprintf(seen_json + seen_len, sizeof seen_json - seen_len,
                                     "%s{\"pid\":%d,\"exe\":\"%s\",\"errno\":%d}",
                                     seen_len ? "," : "", pid, target, rl_errno);
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { finding("pid %d: /proc/pid/exe opened for writing (%s)", pid, target); close(fd); }
    fd = open(path, O_PATH | O_CLOEXEC);
    if (fd >= 0 && npaths < MAX_SEEN) { exe_pids[npaths] = pid; exe_paths[npaths++] = fd; }
    else if (fd >= 0) close(fd);

    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/root/", pid);
    if (stat(path, &st) == 0 && (st.st_dev != myroot->st_dev || st.st_ino != myroot->st_ino))
        finding("pid %d: /proc/pid/root is not the container's root%s", pid, "");
    snprintf(path, sizeof path, "/proc/%d/cwd/", pid);
    if (stat(path, &st) == 0 && st.st_dev != myroot->st_dev)
        finding("pid %d: /proc/pid/cwd is outside the container's root filesystem%s", pid, "");
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char fdpath[300];
        snprintf(fdpath, sizeof fdpath, "/proc/%d/fd/%s", pid, de->d_name);
        int pfd = open(fdpath, O_PATH | O_CLOEXEC);
        if (pfd < 0) continue;
        if (fstat(pfd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
            ssize_t k = readlink(fdpath, target, sizeof target - 1);
            target[k < 0 ? 0 : k] = 0;
            char self[64];
            snprintf(self, sizeof self, "/proc/self/fd/%d", pfd);
            int wfd = open(self, (S_ISDIR(st.st_mode) ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
            if (wfd >= 0) {
                if (S_ISDIR(st.st_mode))
                    finding("pid %d: directory fd reachable from the container: %s", pid, target);
                else
                    finding("pid %d: regular file fd writable from the container: %s", pid, target);
                close(wfd);
            }
        }
        close(pfd);
    }
    if (d) closedir(d);
}

static void retry_exe_paths(void) {
    for (int i = 0; i < npaths; i++) {
        if (exe_paths[i] < 0) continue;
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", exe_paths[i]);
        int fd = open(self, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            char target[4096];
            ssize_t n = readlink(self, target, sizeof target - 1);
            target[n < 0 ? 0 : n] = 0;
            finding("pid %d: executable reopened for writing after exit (%s)", exe_pids[i], target);
            close(fd);
            close(exe_paths[i]);
            exe_paths[i] = -1;
        }
    }
}

static int cve_watch(const char *stopfile) {
    const long millis = 120000;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct stat myroot;
    stat("/", &myroot);
    int me = getpid();
    seen[nseen++] = me;
    /* The watcher's own ancestry (e.g. a shell that started it) is not foreign. */
    for (int p = getppid(); p > 0 && nseen < 8;) {
        seen[nseen++] = p;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/stat", p);
        char *st = read_file(path);
        if (!st) break;
        char *rp = strrchr(st, ')');
        int ppid = 0;
        if (rp) sscanf(rp + 2, "%*c %d", &ppid);
        free(st);
        if (ppid == p) break;
        p = ppid;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed > millis || access(stopfile, F_OK) == 0) break;
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d))) {
            int pid = atoi(de->d_name);
            if (pid <= 0 || is_seen(pid)) continue;
            if (nseen < MAX_SEEN) seen[nseen++] = pid;
            inspect(pid, &myroot);
        }
        if (d) closedir(d);
        retry_exe_paths();
    }
    retry_exe_paths();
    printf("{\"seen\":[%s],\"findings\":[%s]}\n", seen_json, findings);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (argc == 1 || strcmp(argv[1], "report") == 0) {
        report();
        return 0;
    }
    if (strcmp(argv[1], "try") == 0) {
        int rc = try_action(argc - 2, argv + 2);
        if (rc == -2) { fprintf(stderr, "probe: bad try arguments\n"); return 2; }
        result(rc);
        return 0;
    }
    if (strcmp(argv[1], "cve-watch") == 0 && argc == 3) return cve_watch(argv[2]);
    fprintf(stderr, "probe: unknown command %s\n", argv[1]);
    return 2;
}
