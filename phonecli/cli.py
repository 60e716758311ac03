"""The `phonecli` command line: a click group; each stage's commands live in phonecli/commands/.

Command modules import only click at module level (torch, transformers and zarr are
imported inside the commands that need them) so `phonecli --help` answers in about a second.
"""

from __future__ import annotations

import importlib

import click

from phonecli import __version__

# (module, attribute, parent group or None). Order = order in `phonecli --help`.
_COMMANDS = [
    ("phonecli.commands.data", "data", None),
    ("phonecli.commands.synth", "synth", "data"),
    ("phonecli.commands.models", "models", None),
    ("phonecli.commands.extract", "extract", None),
    ("phonecli.commands.cache", "cache", None),
    ("phonecli.commands.probe", "probe", None),
    ("phonecli.commands.fuse", "fuse", None),
    ("phonecli.commands.evaluate", "evaluate", None),
    ("phonecli.commands.evaluate", "report", None),
    ("phonecli.commands.finetune", "finetune", None),
    ("phonecli.commands.pipeline", "quickstart", None),
    ("phonecli.commands.pipeline", "run", None),
]


class _Phonecli(click.Group):
    """The root group: the one place where library errors become one-line messages.

    A :class:`~phonecli.errors.PhonecliError` (bad input, wrong option, stale cache...), a
    missing file, or an environment ``OSError`` (full disk, read-only, permissions) exits 1
    with one line; any other exception is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context):
        from phonecli.errors import PhonecliError, environment_message

        try:
            return super().invoke(ctx)
        except PhonecliError as e:
            raise click.ClickException(str(e)) from e
        except FileNotFoundError as e:
            raise click.ClickException(str(e) if e.filename is None else f"{e.filename}: no such file or directory") from e
        except OSError as e:
            msg = environment_message(e)
            if msg is None:
                raise
            raise click.ClickException(msg) from e


@click.group(cls=_Phonecli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="phonecli")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default=None, help="Messages of the stages on stderr from this level up [default: info; warning for "
                                 "quickstart and run, whose step lines say what happens].")
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level debug.")
@click.pass_context
def main(ctx: click.Context, log_level: str | None, verbose: bool) -> None:
    """Benchmark frozen speech encoders for phoneme recognition and pronunciation assessment.

    \b
    Typical session:
      phonecli data prepare sample --out data/sample
      phonecli extract --model hubert-large --data data/sample --cache cache
      phonecli probe --features cache/<corpus>/hubert-large.zarr --data data/sample --head weighted --layers weighted --out runs/hubert-w
      phonecli evaluate runs/hubert-w
      phonecli report runs/* --out results
    """
    from phonecli.commands._stderr_log import configure_logging, resolve_level

    # the library only logs; this is the one place where those records are given a destination
    configure_logging(resolve_level("debug" if verbose else log_level and log_level.lower(), ctx.invoked_subcommand))


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """``--threads`` callback: size torch / BLAS / OpenMP pools before the command body runs."""
    from phonecli.threads import configure

    configure(value)


def _threads_option() -> click.Option:
    return click.Option(["--threads"], type=click.IntRange(min=1), default=None, expose_value=False,
                        callback=_apply_threads, metavar="N",
                        help="CPU threads for torch and BLAS (default: the cores this process may use: "
                             "affinity mask, cgroup quota, or OMP_NUM_THREADS when set). Results do not "
                             "depend on it.")


def _add_threads(cmd: click.Command) -> None:
    """Every leaf command gets ``--threads`` here, at registration, so command modules need not declare it."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _add_threads(sub)
    elif not any(p.name == "threads" for p in cmd.params):
        cmd.params.append(_threads_option())


def _register() -> None:
    groups: dict[str, click.Group] = {}
    for module_name, attr, parent in _COMMANDS:
        module = importlib.import_module(module_name)
        cmd = getattr(module, attr)
        target = groups.get(parent, main) if parent else main
        target.add_command(cmd)
        if isinstance(cmd, click.Group):
            groups[attr] = cmd
    _add_threads(main)


_register()

if __name__ == "__main__":
    main()
