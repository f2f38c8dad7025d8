"""Raw serial lines: the agent's own console (`--serial`) and an external power meter both need one."""

from __future__ import annotations


def set_raw(fd: int, baud: int) -> None:
    """Put a tty into raw 8N1 at `baud` (termios; a pty accepts and ignores the speed)."""
    import termios
    import tty

    try:
        tty.setraw(fd, termios.TCSANOW)  # no flush: keep what the host already sent
        attrs = termios.tcgetattr(fd)
        speed = getattr(termios, "B%d" % baud, None)
        if speed is not None:
            attrs[4] = attrs[5] = speed
        attrs[2] |= termios.CLOCAL | termios.CREAD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass
