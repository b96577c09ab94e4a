"""Runs as the user sees them: the run folder, its event log, and the processes that train into it.

folder.py claims and names run folders (the lock, resume checks, a free name for a new run);
events.py is the event log's vocabulary (event types, run states) and its reader and writer;
status.py sums a folder up for `tui-lora runs` and the wizard; display.py prints events on a
terminal; detach.py starts a run that outlives its terminal and stops it again; launcher.py
starts multi-process runs through accelerate. Standard library only, except display.py (rich):
the CLI and the TUI use these without loading the ML stack.
"""
