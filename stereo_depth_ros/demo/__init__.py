"""The embedded demo's parts (`stereo_depth_demo` / `make demo`, tools/demo.py): the sample
frames (`frames`), the node, player and dumper as child processes (`processes`), the output
folder (`output`) and the summary (`summary`)."""


class DemoError(RuntimeError):
    """Something the user can fix (assets missing, output folder in use, a process failed)."""
