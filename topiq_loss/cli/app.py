"""Command line: ``topiq-loss score|map|demo|weights`` (see ``topiq-loss --help`` and docs/cli.md).

``score``/``map`` with two images use TOPIQ-FR, with one image TOPIQ-NR; ``score``
also takes folders. Errors print one line and exit with 2. The commands live in
``cli_score`` / ``cli_folders`` / ``cli_weights`` / ``cli_demo``, image files in
:mod:`topiq_loss.cli.images`; every path a command writes passes :mod:`topiq_loss.cli.outputs`
first. This module parses the arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

from ..weights.hub import WeightsError
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS, NR_WEIGHTS, WEIGHTS, list_weights
from .images import read_image, to_pil
from .report import FORMATS
from .scorer import DEFAULT, METRICS

__all__ = ["add_weights_option", "main", "read_image", "to_pil", "weights_arg"]

def weights_arg(value: str) -> str | None:
    """``--weights`` text to the ``weights=`` argument: ``"random"`` becomes None."""
    return None if value == "random" else value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}]; got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}]; got {value}")
        return value

    return parse


def add_weights_option(parser: argparse.ArgumentParser, no_reference: bool = False) -> None:
    """``--weights NAME|PATH|random`` ("random" becomes ``weights=None``).

    With ``no_reference`` the option also lists the no-reference names and defaults
    to ``"default"``: kadid with a reference image, koniq without.
    """
    if no_reference:
        parser.add_argument(
            "--weights",
            default=DEFAULT,
            type=weights_arg,
            help=f"with REF (TOPIQ-FR): {' | '.join(WEIGHTS)}; without (TOPIQ-NR): "
            f"{' | '.join(NR_WEIGHTS)}; or PATH to a checkpoint | random (untrained, tests "
            f"only); default {DEFAULT_WEIGHTS} with REF, {DEFAULT_NR_WEIGHTS} without",
        )
        return
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        type=weights_arg,
        help=f"TOPIQ-FR weights: {' | '.join(WEIGHTS)} | PATH to a checkpoint | random "
        f"(untrained, tests only); default {DEFAULT_WEIGHTS}",
    )


def _common(p: argparse.ArgumentParser, no_reference: bool = True) -> None:
    add_weights_option(p, no_reference=no_reference)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--cache-dir", default=None, help="weights cache (default torch.hub's checkpoints folder)")


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format", choices=FORMATS, default=None,
        help="text: labelled score (default); plain: the bare number (a folder's mean), as "
        "before; json: everything as one JSON object",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; --format plain unless given")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topiq-loss", description="TOPIQ image quality (full- and no-reference).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "score", help="TOPIQ-FR score of DIST against REF, or TOPIQ-NR of DIST alone; files or folders"
    )
    s.add_argument("dist", help="distorted / restored image, or a folder of them")
    s.add_argument(
        "ref", nargs="?", help="reference image of the same size, or a folder (files paired by stem); "
        "omit for no-reference"
    )
    _common(s)
    s.add_argument(
        "--metric", choices=METRICS, default="topiq",
        help="topiq: TOPIQ-FR with REF, TOPIQ-NR without (default); lpips+: the TOPIQ paper's LPIPS+ "
        "distance (AlexNet; REF needed; lower is better; --weights default | PATH | random)",
    )
    _output_options(s)
    s.add_argument("--csv", metavar="FILE", help="write name,score,weights per image")
    s.add_argument("--json", metavar="FILE", help="write the summary and one row per image as JSON")
    s.add_argument(
        "--batch-size", type=_int_in(1, 256), default=8,
        help="images of one size scored together, 1-256 (default 8; at most 2 Mpixel per batch)",
    )
    m = sub.add_parser(
        "map",
        help="draw where TOPIQ looks: gates and cross-scale attention per level (FR with REF, NR without)",
    )
    m.add_argument("dist", help="distorted / restored image")
    m.add_argument("ref", nargs="?", help="reference image of the same size (omit for no-reference)")
    m.add_argument("-o", "--output", required=True, help="output image; the format follows the name (.png, .jpg)")
    _common(m)
    _output_options(m)
    m.add_argument("--panel", type=_int_in(16, 2048), default=256, help="panel size in pixels, 16-2048 (default 256)")
    d = sub.add_parser(
        "demo",
        help="score blur, noise and JPEG at three strengths on a real photograph "
        "(scikit-image's astronaut; needs the [examples] extra)",
    )
    _common(d, no_reference=False)
    d.add_argument(
        "--size", type=_int_in(32, 512), default=256, help="crop size in pixels, 32-512 (the photo is 512 px; default 256)"
    )
    sub.add_parser(
        "basicsr-train",
        help="run BasicSR's train_pipeline with the TOPIQ loss and metrics registered: "
        "topiq-loss basicsr-train -opt X.yml [BasicSR's options] (needs basicsr)",
    )
    w = sub.add_parser("weights", help="list, fetch or verify the official weight files")
    wsub = w.add_subparsers(dest="action", required=True)
    wsub.add_parser("list", help="names, files, whether each is cached, and its pin")
    f = wsub.add_parser("fetch", help="download (or reuse) a file and print its full digest line")
    f.add_argument("name", help=f"one of {', '.join(list_weights())}")
    v = wsub.add_parser("verify", help="hash a cached or given file; print its sha256sum line; exit 2 if refused")
    v.add_argument("name", help="a registry name (its cached file) or a PATH")
    for q in (f, v, wsub.choices["list"]):
        q.add_argument("--cache-dir", default=None, help="weights cache (default torch.hub's checkpoints folder)")
    return p


def cli_wording(message: str) -> str:
    """A library error message in the command line's terms (``--weights PATH``, not ``weights='PATH'``)."""
    message = re.sub(r"\bweights='([^']*)'", r"--weights \1", message)
    message = re.sub(r"\bcache_dir=\.\.\.", "--cache-dir DIR", message)
    return re.sub(r"`weights` file", "--weights file", message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 error or refused file)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["basicsr-train"]:
        # BasicSR parses its own options (-opt, --launcher, ...) from sys.argv.
        from ..integrations.basicsr import main as basicsr_main

        basicsr_main(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # here, where a reader that went away is handled below
        return status
    except BrokenPipeError:
        return _reader_gone()
    except (OSError, RuntimeError, ValueError, TypeError, WeightsError) as exc:
        print(f"topiq-loss: error: {cli_wording(str(exc))}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import demo

        demo(args.weights, args.size, args.device, args.cache_dir)
        return 0
    if args.command == "weights":
        from .weights import weights_command

        return weights_command(args)
    from .score import map_command, score_command

    return map_command(args) if args.command == "map" else score_command(args)


#: The status of a process that SIGPIPE ended (128 + 13), what a shell reports for Unix tools.
PIPE_CLOSED = 141


def _reader_gone() -> int:
    """``topiq-loss score DIR | head -1``: the reader closed the pipe. Stop quietly, as Unix
    tools do; stdout is pointed at devnull (as Python's documentation of SIGPIPE advises)
    so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor behind sys.stdout
        pass
    return PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
