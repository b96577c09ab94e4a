"""Command line: argument parsing and dispatch only.

Nothing heavy is imported here or by `validate`/`show`/`presets`: torch and the
Hugging Face libraries load only when a run starts (a test checks sys.modules).
Exit status: 0 done, 1 the run failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tui_lora import __version__
from tui_lora.errors import RunFailed, UserError, first_line
from tui_lora.places import display_path
from tui_lora.presets import (all_presets, bundled_presets, load_preset, preset_description, presets_dir,
                              resolve_preset, run_file_of, user_presets, user_presets_dir)
from tui_lora.secret_guard import redact

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def load(args):
    return load_preset(args.preset, args.set or [])


# ---------------------------------------------------------------- verbs


def cmd_validate(args) -> int:
    from tui_lora.data.prepare import check_system_prompts_here

    config = load(args)
    check_system_prompts_here(config)  # the one check that needs the model's template, where it is on disk
    lora = config.lora
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
    print(f"{args.preset}: ok — model {config.model.name_or_path}, quantization {config.quantization.mode}, "
          f"LoRA r={lora.r} alpha={lora.lora_alpha} on {targets}, data {config.data.described()}, "
          f"run folder {config.training.output_dir}")
    return 0


def cmd_show(args) -> int:
    from tui_lora.config import to_toml

    sys.stdout.write(to_toml(load(args)))
    return 0


def cmd_presets(args) -> int:
    if args.dest and not args.copy:
        raise UserError(f"presets {args.dest}: to copy a preset, name it: tui-lora presets --copy NAME {args.dest}")
    if args.copy:
        return copy_preset(args.copy, args.dest, args.force)
    list_presets()
    return 0


def copy_preset(name: str, dest_arg: str | None, force: bool) -> int:
    found = all_presets()
    if name not in found:
        raise UserError(f"presets --copy {name}: no such preset; choose one of {', '.join(found)}")
    dest = Path(dest_arg or f"{name}.toml").expanduser()
    # "DIR/" names a folder even before it exists (the user presets folder is made on the first save)
    if dest.is_dir() or (dest_arg or "").endswith(("/", os.sep)):
        dest = dest / f"{name}.toml"
    if dest.exists() and not force:
        raise UserError(f"{dest} already exists; choose another name or add --force to replace it")
    from tui_lora.config.write import write_atomic

    write_atomic(dest, found[name].read_text(encoding="utf-8"), overwrite=force)
    print(f"copied {name} to {dest}; edit it, then: tui-lora run {dest}")
    return 0


def list_presets() -> None:
    bundled, yours, folder = bundled_presets(), user_presets(), display_path(user_presets_dir())
    print(f"bundled presets ({presets_dir()}):")
    for name, path in bundled.items():
        print(f"  {name:28} {preset_description(path)}")
    print(f"\nyour presets ({folder}):")
    for name, path in yours.items():
        shadows = "(replaces the bundled one) " if name in bundled else ""
        print(f"  {name:28} {shadows}{preset_description(path)}")
    if not yours:
        print("  none yet")
    print(f"\nrun one: tui-lora run NAME; copy one out for editing: tui-lora presets --copy NAME [DEST]"
          f"\nadd your own: save it from the wizard (tui-lora), or: tui-lora presets --copy NAME {folder}/")


def cmd_data(args) -> int:
    config = load(args)
    from tui_lora.hub import apply_hub_environment

    apply_hub_environment(config.hub)
    from tui_lora.data.preview import show_data

    show_data(config, count=args.count, as_jsonl=args.jsonl)
    return 0


def cmd_hub_check(args) -> int:
    config = load(args)
    from tui_lora.hub import apply_hub_environment, check_hub

    apply_hub_environment(config.hub)
    lines, ok = check_hub(config)
    for line in lines:
        print(line)
    return 0 if ok else EXIT_USAGE


def cmd_run(args) -> int:
    if args.gpus is not None and not args.queue:
        raise UserError("--gpus goes with --queue; a run started now takes its GPUs from CUDA_VISIBLE_DEVICES")
    if args.queue:
        if args.print_command:
            raise UserError("--queue and --print-command do not go together: one queues the run, the other "
                            "prints the command for another scheduler")
        return run_queued(args)
    if args.resume is None:
        from tui_lora.runs.folder import new_run_folder
        from tui_lora.runs.queue import promised_folders

        fresh = new_run_folder(run_file_of(args.preset), args.set or [], busy=frozenset(promised_folders()))
        if fresh:
            args.set = [*(args.set or []), f"training.output_dir={fresh}"]
            print(f"run folder: {fresh} (the run file names no training.output_dir)", file=sys.stderr)
    if getattr(args, "print_command", False):
        return print_command(args)
    if getattr(args, "detach", False):
        return run_detached(args)
    from tui_lora.streams import survive_closed_readers

    # `| tee log` or `| head` may close the terminal side at any moment; the run must not notice
    survive_closed_readers()
    from tui_lora.runs.folder import open_run_folder, resolve_paths

    config = resolve_paths(load(args))
    from tui_lora.runs.launcher import needs_launcher

    if needs_launcher(config):  # several processes: accelerate launch runs them, this process watches
        from tui_lora.runs.launcher import run_launched
        from tui_lora.runs.display import PlainDisplay, display_for

        return run_launched(config, run_file_of(args.preset), args.set or [], args.resume,
                            PlainDisplay() if args.plain else display_for())
    folder, checkpoint = open_run_folder(config, args.resume)
    from tui_lora.engine.session import Interrupted, execute
    from tui_lora.runs.display import PlainDisplay, display_for

    display = PlainDisplay() if args.plain else display_for()
    try:
        execute(config, folder, checkpoint, listeners=[display])
    except Interrupted as exc:
        display.close()
        print(f"{exc.state}: {exc}; run folder {folder.path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        display.close()  # closing twice is harmless; the bars must be gone before any message
        folder.release()
    return 0


def print_command(args) -> int:
    """The command `tui-lora run` would start (accelerate launch for several processes), for a scheduler."""
    from tui_lora.runs.launcher import printable_command
    from tui_lora.runs.folder import resolve_paths

    print(printable_command(resolve_paths(load(args)), run_file_of(args.preset), args.set or [], args.resume))
    return 0


def run_detached(args) -> int:
    from tui_lora.runs.detach import start_detached

    run = start_detached(run_file_of(args.preset), args.set or [], args.resume)
    print(f"started in the background: run folder {run.folder} (pid {run.pid})")
    print(f"watch: tui-lora attach {run.folder}    list: tui-lora runs    "
          f"stop: kill {run.pid} (saves a checkpoint first)")
    return 0


def run_queued(args) -> int:
    from tui_lora.runs import queue

    entry, now = queue.enqueue(args.preset, args.set or [], args.resume, args.gpus)
    if entry.state == queue.RUNNING:
        print(f"queued as {entry.id} and started: run folder {display_path(entry.folder)} (pid {entry.pid})")
    elif entry.state == queue.WAITING:
        waiting = now.waiting()
        why = f"; the queue is paused ({now.paused_why or 'tui-lora queue resume goes on'})" if now.paused else ""
        print(f"queued as {entry.id}, position {waiting.index(entry) + 1} of {len(waiting)}: run folder "
              f"{display_path(entry.folder)}{why}")
    else:  # it could not even start
        raise RunFailed(f"queued as {entry.id} but it did not start: {entry.message}")
    print(f"list: tui-lora queue    watch: tui-lora attach {display_path(entry.folder)}    "
          f"cancel: tui-lora queue cancel {entry.id}")
    return 0


def cmd_queue(args) -> int:
    from tui_lora.runs import queue

    action = args.action or "list"
    if action in ("cancel", "move", "limit") and not args.numbers:
        raise UserError(f"queue {action}: " + {"cancel": "name the entries to cancel, e.g. tui-lora queue cancel 3",
                                               "move": "give the entry and its new place, e.g. tui-lora queue move 3 1",
                                               "limit": "give how many runs may run at once, e.g. "
                                                        "tui-lora queue limit 2"}[action])
    numbers = []
    for text in args.numbers:
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"queue {action}: {text!r} is not a whole number of 1 or more; entries, positions and "
                            "the limit are 1, 2, 3 … (tui-lora queue lists the entries)")
        numbers.append(int(text))
    if action in ("list", "pause", "resume", "clear") and numbers:
        raise UserError(f"queue {action} takes no numbers")
    if action == "move" and len(numbers) != 2 or action == "limit" and len(numbers) != 1:
        raise UserError("queue move takes an entry and a position: tui-lora queue move 3 1" if action == "move"
                        else "queue limit takes one number: how many runs may run at once")
    if action == "cancel":
        for line in queue.cancel(numbers):
            print(line)
        return 0
    if action == "move":
        print(queue.move(*numbers))
        return 0
    if action == "list":
        now = queue.current()
    else:
        now = queue.change(paused={"pause": True, "resume": False}.get(action),
                           limit=numbers[0] if action == "limit" else None, clear=action == "clear")
    if args.json:
        import json
        from dataclasses import asdict

        print(json.dumps({"paused": now.paused, "paused_why": now.paused_why, "limit": now.limit,
                          "entries": [asdict(entry) for entry in now.entries]}, ensure_ascii=False))
        return 0
    print_queue(now)
    return 0


def print_queue(now) -> None:
    from tui_lora.runs.status import progress_text, read_status

    running, waiting = now.running(), now.waiting()
    state = (f"paused: {now.paused_why}" if now.paused_why else "paused: tui-lora queue resume goes on") \
        if now.paused else "on"
    print(f"queue {state} · {len(running)} running, {len(waiting)} waiting · at most {now.limit} at once")
    if not now.entries:
        print("nothing queued; add a run with: tui-lora run PRESET --queue")
        return
    rows = [["#", "state", "how far", "gpus", "queued by", "since", "run file", "run folder"]]
    for entry in [*running, *waiting, *(entry for entry in now.entries if not entry.active)]:
        if entry.state == "waiting":
            where, since = f"position {waiting.index(entry) + 1}", entry.queued_at
        elif entry.state == "running":
            where, since = progress_text(read_status(entry.folder)), entry.started_at
            where += " (stopping)" if entry.stopping else ""
        else:
            where, since = entry.message or "-", entry.ended_at
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(since)) if since else "-"
        state = f"{entry.state} (pid {entry.pid})" if entry.state == "running" else entry.state
        rows.append([str(entry.id), state, where, entry.gpus_text(), entry.user, when,
                     display_path(entry.run_file), display_path(entry.folder)])
    print_table(rows)


def cmd_runs(args) -> int:
    from tui_lora.runs.status import is_run_folder, read_status

    if args.folders:
        folders = [Path(folder).expanduser().absolute() for folder in args.folders]
        for folder in folders:
            if not is_run_folder(folder):
                raise UserError(f"{folder}: not a run folder (no run.toml or events.jsonl in it)")
    else:
        from tui_lora.places import recent_runs

        folders = recent_runs(limit=20)
    statuses = [read_status(folder) for folder in folders]
    if args.json:
        import json

        from tui_lora.runs.status import status_to_dict

        for status in statuses:
            print(json.dumps(status_to_dict(status), ensure_ascii=False))
        return 0
    if not statuses:
        print("no runs yet; start one with: tui-lora run demo (add --detach to keep it running in the background)")
        return 0
    print_runs(statuses)
    return 0


def print_runs(statuses) -> None:
    """A table of runs: rich on a terminal, aligned plain text anywhere else."""
    from tui_lora.runs.status import progress_text

    header = ("state", "progress", "started", "loss", "folder")
    rows = []
    for status in statuses:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.started)) if status.started else "-"
        state = status.state if status.pid is None else f"{status.state} (pid {status.pid})"
        loss = f"{status.loss:.4f}" if isinstance(status.loss, (int, float)) else "-"
        rows.append([state, progress_text(status), started, loss, display_path(status.folder)])
    print_table([list(header), *rows])


def cmd_compare(args) -> int:
    import shutil

    from tui_lora.runs import compare

    runs = compare.compare(args.folders)
    if args.json:
        import json

        print(json.dumps(compare.as_json(runs), ensure_ascii=False))
        return 0
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())  # plain text in a pipe: no colour codes
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    console.print(compare.plot_text(runs, width=width))
    print_table(compare.table_rows(runs))
    differing = compare.settings_rows(runs)
    if len(differing) > 1:
        print("\nsettings that differ:")
        print_table(differing)
    else:
        print("\nthe settings are the same (but for the run folders)")
    if args.png is not None:
        path = Path(args.png or f"compare-{'-'.join(run.folder.name for run in runs)}.png")
        print(f"\nplot written to {compare.write_png(runs, path)}")
    return 0


def print_table(rows: list[list[str]]) -> None:
    """[header, rows…] aligned in columns: rich on a terminal, plain text anywhere else."""
    header, body = rows[0], rows[1:]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*header, box=None, header_style="bold")
        for row in body:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_wizard(args) -> int:
    """The Textual wizard; Start launches the run in its own process and shows it on the run screen."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("the wizard needs an interactive terminal; in scripts use tui-lora run PRESET "
                        "(tui-lora --help lists every command)")
    preset = resolve_preset(args.preset) if getattr(args, "preset", None) else None
    if preset is not None:
        from tui_lora.config.load import read_toml

        read_toml(preset)  # a missing or unreadable file is one line here, not a screen of errors
    from tui_lora.tui import run_wizard

    return _left(run_wizard(preset))


def cmd_attach(args) -> int:
    folder = Path(args.folder).expanduser().absolute()
    if not (folder / "events.jsonl").is_file():
        what = "does not exist" if not folder.exists() else "is not a run folder (it has no events.jsonl)"
        raise UserError(f"{args.folder} {what}; tui-lora runs lists the run folders")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("attach needs an interactive terminal; in scripts use tui-lora runs, or read "
                        f"{folder / 'events.jsonl'}")
    from tui_lora.tui import run_attached

    return _left(run_attached(folder))


def cmd_chat(args) -> int:
    if args.json and args.prompt is None:
        raise UserError("chat --json answers one question: give it with --prompt TEXT")
    from tui_lora.after.chat import GenerationSettings
    from tui_lora.after.console import chat

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed)
    return chat(args.folder, args.set or [], settings, prompt=args.prompt, system=args.system,
                compare=args.compare, as_json=args.json)


def cmd_eval(args) -> int:
    from tui_lora.after.evaluate import evaluate, report_lines
    from tui_lora.after.loading import quiet_libraries

    quiet_libraries()
    report = evaluate(args.folder, args.set or [], data_file=args.data, limit=args.limit,
                      batch_size=args.batch_size, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        import json

        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print("\n".join(report_lines(report)))
    return 0


def cmd_merge(args) -> int:
    from tui_lora.after.loading import quiet_libraries
    from tui_lora.after.merge import merge

    quiet_libraries()
    result = merge(args.folder, args.out, args.set or [], force=args.force, dtype=args.dtype,
                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    tied = " (output layer untied from the embeddings: the adapter changed it)" if result.untied else ""
    print(f"merged model written to {result.out}: {result.parameters:,} parameters in {result.dtype}{tied}")
    print(f"load it without peft: AutoModelForCausalLM.from_pretrained(\"{result.out}\")")
    return 0


def cmd_push(args) -> int:
    from tui_lora.after.push import push, summary_line

    # progress on stderr, as merge's; huggingface_hub's own bars only where they can draw (a terminal)
    result = push(args.folder, args.repo, merged=args.merged, private=args.private, revision=args.revision,
                  force=args.force, progress=lambda line: print(line, file=sys.stderr, flush=True),
                  bars=sys.stderr.isatty())
    print(summary_line(result))
    return 0


def _left(chosen) -> int:
    """After the full-screen app: a run left running is still there, and this says how to get back to it."""
    if chosen and chosen[0] == "left":
        print(f"the run goes on in the background; watch it again with: tui-lora attach {chosen[1]}")
    return 0


# ---------------------------------------------------------------- parsing


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of 0 or more (0 means greedy)")
    return value


def top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0 and at most 1")
    return value


def seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def add_after_verbs(verbs) -> None:
    """chat, eval, merge and push: what to do with a run's adapter once it is trained."""
    where = dict(metavar="RUN_FOLDER", help="a run folder (its adapter/), one of its checkpoint-N folders, "
                                            "or an adapter folder")
    overrides = dict(action="append", metavar="SECTION.KEY=VALUE",
                     help="change how the model loads, e.g. --set model.device_map=cpu (repeatable)")

    chat = verbs.add_parser("chat", help="chat with a trained adapter (streaming), or compare it with its base model",
                            description="Chat with the base model plus the run's adapter, in the chat template "
                                        "the run trained on. Lines from stdin; /reset, /quit, Ctrl+D.")
    chat.add_argument("folder", **where)
    chat.add_argument("--prompt", metavar="TEXT", help="answer this once and exit (for scripts)")
    chat.add_argument("--compare", action="store_true", help="answer every question with and without the adapter")
    chat.add_argument("--system", metavar="TEXT", help="a system prompt (default: the chat template's own)")
    chat.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N",
                      help="longest reply in tokens (default 256)")
    chat.add_argument("--temperature", type=temperature, default=0.7, metavar="T",
                      help="sampling temperature; 0 answers greedily (default 0.7)")
    chat.add_argument("--top-p", type=top_p, default=0.9, metavar="P", help="nucleus sampling share (default 0.9)")
    chat.add_argument("--seed", type=seed, metavar="N", help="random seed, for answers that can be reproduced")
    chat.add_argument("--json", action="store_true",
                      help="with --prompt: one JSON object (text, new_tokens, stopped_by) per model")
    chat.add_argument("--set", **overrides)
    chat.set_defaults(func=cmd_chat)

    evaluate = verbs.add_parser("eval", help="loss and perplexity of the adapter and of the base model",
                                description="Loss and perplexity of the adapter and of its base model on the run's "
                                            "validation split, or on a data file.")
    evaluate.add_argument("folder", **where)
    evaluate.add_argument("--data", metavar="FILE", help="evaluate on this data file or folder instead (read whole, "
                                                         "format detected)")
    evaluate.add_argument("--limit", type=positive_int, metavar="N", help="at most N examples")
    evaluate.add_argument("--batch-size", type=positive_int, metavar="N",
                          help="examples per forward pass (default training.per_device_eval_batch_size)")
    evaluate.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    evaluate.add_argument("--set", **overrides)
    evaluate.set_defaults(func=cmd_eval)

    merge = verbs.add_parser("merge", help="merge the adapter into the base weights: a model folder without peft",
                             description="Merge the adapter into the base model's weights (a quantised base is "
                                         "loaded again unquantised first) and write a model folder with its "
                                         "tokenizer and chat template.")
    merge.add_argument("folder", **where)
    merge.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    merge.add_argument("--force", action="store_true", help="replace what DIR holds")
    merge.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"),
                       help="weight dtype of the merged model (default: the run's model.dtype; auto: the "
                            "checkpoint's own)")
    merge.add_argument("--set", **overrides)
    merge.set_defaults(func=cmd_merge)

    publish = verbs.add_parser(
        "push", help="upload the adapter (or the merged model) with a model card to the Hugging Face hub, a mirror "
                     "or ModelScope",
        description="Upload a finished run's adapter, with its tokenizer, chat template and a generated model card, "
                    "to where the run file's [hub] points: the Hugging Face hub, the mirror in hub.endpoint, or "
                    "ModelScope. The token comes from HF_TOKEN or `hf auth login` (MODELSCOPE_API_TOKEN or its "
                    "login). Running it again after a dropped connection finishes the upload.")
    publish.add_argument("folder", metavar="RUN_FOLDER", help="the run's training.output_dir")
    publish.add_argument("--repo", required=True, metavar="NAME",
                         help="OWNER/NAME, or NAME alone for the token owner's namespace (ModelScope: OWNER/NAME)")
    publish.add_argument("--merged", action="store_true",
                         help="upload the merged model `tui-lora merge` last wrote for this run instead")
    publish.add_argument("--private", action="store_true", help="create the repo private")
    publish.add_argument("--revision", metavar="BRANCH",
                         help="the branch to push to, made from main when missing (default main; ModelScope master)")
    publish.add_argument("--force", action="store_true",
                         help="push into a repo that holds files of something else (they stay)")
    publish.set_defaults(func=cmd_push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-lora",
        description="LoRA and QLoRA fine-tuning of chat models from a TOML run file.",
        epilog="In a terminal, tui-lora alone opens the wizard. Headless: tui-lora presets, then tui-lora run demo",
    )
    parser.add_argument("--version", action="version", version=f"tui-lora {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def with_preset(name: str, help: str, under=verbs) -> argparse.ArgumentParser:
        sub = under.add_parser(name, help=help, description=help)
        sub.add_argument("preset", metavar="PRESET",
                         help="a .toml run file, the name of a preset (yours or a bundled one), or a run folder "
                              "(its run.toml: the run file as the run was started, --set included)")
        sub.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                         help="override one field, e.g. --set lora.r=16 (repeatable)")
        return sub

    run = with_preset("run", "train from a run file, showing progress")
    run.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue the run in training.output_dir from its latest checkpoint, or from CHECKPOINT")
    run.add_argument("--plain", action="store_true", help="plain lines instead of progress bars")
    run.add_argument("--detach", action="store_true",
                     help="run in the background, apart from this terminal (it survives logout and a lost SSH "
                          "session); output goes to console.log in the run folder")
    run.add_argument("--queue", action="store_true",
                     help="check the run, then queue it: it starts, detached, when the runs ahead of it have "
                          "ended (tui-lora queue lists the queue)")
    run.add_argument("--gpus", metavar="LIST",
                     help="with --queue: the GPUs the run uses, e.g. 0,1 (its CUDA_VISIBLE_DEVICES; default: the "
                          "one set now, else every GPU); runs on different GPUs may run at once")
    run.add_argument("--print-command", action="store_true",
                     help="print the command that runs the training (accelerate launch for several processes) "
                          "and exit, for Slurm or another scheduler")
    run.set_defaults(func=cmd_run)
    with_preset("validate", "check a run file without training").set_defaults(func=cmd_validate)
    edit = verbs.add_parser("edit", help="open a run file in the wizard (tui-lora alone starts a new one)",
                            description="Open a run file in the wizard.")
    edit.add_argument("preset", metavar="PRESET", help="a .toml run file, or the name of a preset (yours or bundled)")
    edit.set_defaults(func=cmd_wizard)
    attach = verbs.add_parser("attach", help="watch a run (running or finished): progress, loss plot, log",
                              description="Watch a run folder's progress, loss plot and log; leaving keeps the run going.")
    attach.add_argument("folder", metavar="RUN_FOLDER", help="the run's training.output_dir")
    attach.set_defaults(func=cmd_attach)
    data = with_preset("data", "show examples as the model sees them (trained tokens highlighted) and a summary")
    data.add_argument("--count", type=positive_int, metavar="N", help="examples to show (default 3; --jsonl: all)")
    data.add_argument("--jsonl", action="store_true", help="one JSON object per example: input_ids, labels, text")
    data.set_defaults(func=cmd_data)
    with_preset("show", "print a run file with every default filled in").set_defaults(func=cmd_show)

    hub = verbs.add_parser("hub", help="check where models and data come from",
                           description="Check where models and data come from.")
    hub_verbs = hub.add_subparsers(dest="hub_verb", metavar="HUB_COMMAND", required=True)
    with_preset("check", "is the endpoint reachable, do the model and data ids exist there, how much to download",
                under=hub_verbs).set_defaults(func=cmd_hub_check)

    presets = verbs.add_parser("presets", help="list the bundled presets and your own, or copy one out for editing",
                               description="List the bundled presets and your own, or copy one out for editing.")
    presets.add_argument("--copy", metavar="NAME", help="copy this preset")
    presets.add_argument("dest", nargs="?", metavar="DEST", help="where to copy it (default NAME.toml)")
    presets.add_argument("--force", action="store_true", help="replace DEST if it exists")
    presets.set_defaults(func=cmd_presets)

    runs = verbs.add_parser("runs", help="list runs: state, progress, when started, loss (recent ones, or FOLDER ...)",
                            description="List runs: the given run folders, or the recent ones.")
    runs.add_argument("folders", nargs="*", metavar="FOLDER", help="run folders (default: the 20 most recent runs)")
    runs.add_argument("--json", action="store_true", help="one JSON object per run, for scripts")
    runs.set_defaults(func=cmd_runs)
    queue = verbs.add_parser(
        "queue", help="the run queue: list it, cancel or move an entry, pause or resume it, how many run at once",
        description="The runs queued with tui-lora run PRESET --queue. They start one after another, or several "
                    "at once on different GPUs (queue limit N), each as a detached run.")
    queue.add_argument("action", nargs="?", choices=("list", "cancel", "move", "pause", "resume", "limit", "clear"),
                       help="list (the default); cancel N…; move N POSITION; pause; resume; limit N (runs at "
                            "once); clear (forget the ended entries)")
    queue.add_argument("numbers", nargs="*", metavar="N", help="entry numbers (and a position for move)")
    queue.add_argument("--json", action="store_true", help="the queue as one JSON object, for scripts")
    queue.set_defaults(func=cmd_queue)

    compare = verbs.add_parser(
        "compare", help="several runs side by side: loss curves on one plot, final and best metrics, the settings "
                        "that differ",
        description="Compare run folders: their training and evaluation losses on one plot (a letter a run: lower "
                    "case for training, upper case for evaluations), a table of final and best losses, steps, wall "
                    "time, tokens per second and peak GPU memory, and the run-file settings that differ.")
    compare.add_argument("folders", nargs="+", metavar="RUN_FOLDER", help="two run folders or more")
    compare.add_argument("--json", action="store_true", help="everything as one JSON object, for scripts")
    compare.add_argument("--png", nargs="?", const="", metavar="FILE",
                         help="also draw the curves into a PNG (needs matplotlib; default compare-NAMES.png here)")
    compare.set_defaults(func=cmd_compare)
    add_after_verbs(verbs)
    return parser


def unknown_verb(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """One line for a mistyped command (`tui-lora rnu`), with the nearest one; None when every command is known.

    argparse's own "invalid choice" is the usage plus a list of every verb; a slip of the fingers deserves
    the one line that a misspelled key in a run file gets (the same difflib helper finds the near miss).
    """
    from tui_lora.config.load import closest

    words, level = [a for a in argv if not a.startswith("-")], parser
    for depth, word in enumerate(words[:2]):
        verbs = next((a for a in level._actions if isinstance(a, argparse._SubParsersAction)), None)
        if verbs is None:
            return None
        if word not in verbs.choices:
            if depth == 0 and any(a.startswith("-") for a in argv[:argv.index(word)]):
                return None  # after an option (--version, -h) the word is not a command; argparse says so
            where = "tui-lora" if depth == 0 else f"tui-lora {words[0]}"
            near = closest(word, list(verbs.choices))
            hint = f"did you mean '{near}'?" if near else f"commands are {', '.join(verbs.choices)}"
            return f"unknown command '{word}'; {hint} ({where} --help lists every command)"
        level = verbs.choices[word]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    mistyped = unknown_verb(parser, argv)
    if mistyped:
        print(f"error: {mistyped}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    from tui_lora.runs import queue

    queued_run = bool(os.environ.get(queue.ENTRY_ENV)) and getattr(args, "func", None) is cmd_run
    if not queued_run and args.verb != "queue":
        queue.check()  # no daemon: each command starts the queued runs that are due (tui_lora/runs/queue.py)
    exit_status = dispatch(parser, args)
    if queued_run:
        queue.run_ended(exit_status)  # this run was the queue's: the next one starts now
    return exit_status


def dispatch(parser: argparse.ArgumentParser, args) -> int:
    """The verb's exit status, every error turned into its one line."""
    if not getattr(args, "func", None):
        if sys.stdin.isatty() and sys.stdout.isatty():
            args.func = cmd_wizard  # `tui-lora` alone, in a terminal: the wizard
        else:
            parser.print_help()
            return 0
    try:
        return args.func(args)
    # Every message is redacted: a hub token must not reach a terminal or a console.log, whatever echoed it.
    except UserError as exc:
        for line in redact(str(exc)).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as exc:
        print(f"run failed: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (head, less) went away; point stdout at nothing so the exit flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # Anything left is a bug or an environment problem: one line, and the traceback only on request.
        if os.environ.get("TUI_LORA_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {redact(first_line(exc))} (set TUI_LORA_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
