"""kctl completion bash|zsh|fish: a completion script for the shell, made from kctl's own
parsers so that it never falls behind the commands."""

from __future__ import annotations

import argparse

from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "print a shell completion script (bash, zsh or fish)"
OFFLINE = True


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh", "fish"))


def _verbs() -> dict[str, list[str]]:
    """verb -> its option strings."""
    from kettle.cli.main import COMMANDS, parser

    p = parser(list(COMMANDS))
    found: dict[str, list[str]] = {}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                opts = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
                found[verb] = sorted(set(opts))
    return found


def bash(verbs: dict[str, list[str]]) -> str:
    cases = "\n".join(f'        {v}) opts="{" ".join(o)}" ;;' for v, o in sorted(verbs.items()))
    return f"""# kctl completion for bash: source <(kctl completion bash)
_kctl() {{
    local cur verb opts i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    verb=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --address) ((i++)) ;;
            -*) ;;
            *) verb="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$verb" ]]; then
        COMPREPLY=($(compgen -W "{" ".join(sorted(verbs))} --address" -- "$cur"))
        return
    fi
    case "$verb" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        local names
        names=$(kctl ps -a --format '{{{{.Names}}}}' 2>/dev/null)
        COMPREPLY=($(compgen -W "$names" -- "$cur"))
    fi
}}
complete -F _kctl kctl"""


def zsh(verbs: dict[str, list[str]]) -> str:
    return f"""#compdef kctl
# kctl completion for zsh: source <(kctl completion zsh)
autoload -U bashcompinit && bashcompinit
{bash(verbs)}"""


def fish(verbs: dict[str, list[str]]) -> str:
    lines = ["# kctl completion for fish: kctl completion fish | source"]
    names = " ".join(sorted(verbs))
    lines.append(f'complete -c kctl -f -n "not __fish_seen_subcommand_from {names}" -a "{names}"')
    for verb, opts in sorted(verbs.items()):
        for o in opts:
            lines.append(f"complete -c kctl -n '__fish_seen_subcommand_from {verb}' -l {o[2:]}")
    return "\n".join(lines)


def run(_client: Client | None, a: argparse.Namespace) -> int:
    verbs = _verbs()
    out({"bash": bash, "zsh": zsh, "fish": fish}[a.shell](verbs))
    return 0
