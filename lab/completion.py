"""Shell completion for `lab`, generated from its argument parser: verbs, each verb's options and the
choices of its arguments. No list of words is kept by hand, so completion follows the parser."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh")


def words(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Per verb, what may follow it: its options and the choices of its positional arguments."""
    verbs: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse offers no public way to list sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                verbs[verb] = _arguments(sub)
    return verbs


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    found: list[str] = []
    for action in parser._actions:
        found += [s for s in action.option_strings if s.startswith("--")] or list(action.option_strings)
        if not action.option_strings and action.choices:
            found += [str(c) for c in action.choices]
    return found


def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Per verb, its one-line help (zsh shows it beside the verb)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def bash(parser: argparse.ArgumentParser) -> str:
    verbs = words(parser)
    cases = "".join(f"        {verb}) options=\"{' '.join(opts)}\" ;;\n" for verb, opts in verbs.items())
    return f"""# bash completion for lab: eval "$(lab completion bash)"
_lab() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} options
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "{' '.join(verbs)} --help --version" -- "$cur"))
        return
    fi
    case ${{COMP_WORDS[1]}} in
{cases}        *) options="" ;;
    esac
    COMPREPLY=($(compgen -W "$options --help" -- "$cur"))
}}
complete -o default -F _lab lab
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    verbs = words(parser)
    described = "\n".join(f"        {_quote(f'{verb}:{text}')}" for verb, text in helps(parser).items())
    cases = "".join(f"        {verb}) compadd -- {' '.join(opts)} --help ;;\n" for verb, opts in verbs.items())
    return f"""#compdef lab
# zsh completion for lab: source <(lab completion zsh) (after compinit)
_lab() {{
    local -a verbs
    verbs=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe 'verb' verbs
        compadd -- --help --version
        return
    fi
    case $words[2] in
{cases}    esac
    _files
}}
compdef _lab lab
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return bash(parser) if shell == "bash" else zsh(parser)
