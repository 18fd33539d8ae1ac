"""When may the fixture files have changed? The watcher thread of every worker asks every second.

Polling answers "perhaps" every time, and the watcher compares fixture_files.signature: one stat
per case file, some 12 ms of CPU per second and per worker for 2,000 files, and no cheaper way
of polling exists (the stat calls are the whole cost). So on Linux, where the folders live on a
local filesystem, inotify answers instead: the kernel reports every write, creation, deletion,
rename and attribute change in the watched folders, and a quiet second costs one read(2).
Elsewhere (another OS, NFS, SMB, FUSE, 9p, virtiofs: writes made by another machine or by the
host of a VM raise no event there) or when the kernel refuses (watch or instance limits), the
watcher polls.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re

from .fixture_files import case_folders, is_case_name

# Filesystems on which every change goes through this kernel, so inotify sees it.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "bcachefs",
                               "zfs", "tmpfs", "ramfs", "overlay"})
# IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
# | IN_DELETE_SELF | IN_MOVE_SELF: any change of a folder's entries or of a file's content or times.
EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
GONE = (errno.ENOENT, errno.ENOTDIR)


class Changes:
    """may_have_changed(): True when the fixture files may differ from the last call's state."""

    def __init__(self, dirs):
        self.dirs = list(dirs)
        self._inotify = _Inotify.open(self.dirs)

    @property
    def polling(self) -> bool:
        return self._inotify is None

    def may_have_changed(self) -> bool:
        if self._inotify is None:
            return True
        try:
            if not self._inotify.drain():
                return False
            self._inotify.watch(self.dirs)  # before the caller reads: a new folder is watched first
        except OSError:
            self._inotify.close()
            self._inotify = None  # polling from now on, and this time the caller compares
        return True

    def close(self):
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None


class _Inotify:
    def __init__(self, libc, fd: int):
        self._libc = libc
        self._fd = fd

    @classmethod
    def open(cls, dirs):
        """Watching `dirs`, or None where inotify is missing, refused or would miss changes."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError, TypeError):  # no such call: not Linux
            return None
        if fd < 0:
            return None
        inotify = cls(libc, fd)
        try:
            inotify.watch(dirs)
        except OSError:
            inotify.close()
            return None
        return inotify

    def watch(self, dirs):
        """Watch every folder the loader reads, and every symlinked case file (an edit of its target
        is not an event of the folder). Watching an already watched path changes nothing."""
        targets = _targets(dirs)
        filesystems = _filesystems()
        for path in targets:
            if _filesystem(os.path.realpath(path), filesystems) not in LOCAL_FILESYSTEMS:
                raise OSError(f"{path}: not on a local filesystem, inotify could miss its changes")
        for path in targets:
            if self._libc.inotify_add_watch(self._fd, os.fsencode(path), EVENTS) < 0:
                error = ctypes.get_errno()
                if error not in GONE:  # gone since we listed it: its parent's watch reported that
                    raise OSError(error, f"inotify_add_watch {path}: {os.strerror(error)}")

    def drain(self) -> bool:
        """Whether any event came since the last call (an overflow of the queue is one too)."""
        seen = False
        while True:
            try:
                seen = bool(os.read(self._fd, 65536)) or seen
            except BlockingIOError:
                return seen

    def close(self):
        os.close(self._fd)


def _targets(dirs) -> list:
    """The roots, their folders, and the symlinked case files in them; OSError if a root is missing
    (its creation would raise no event)."""
    targets = []
    for root in dirs:
        targets.append(root)
        for folder in case_folders(root):
            targets.append(folder.path)
            targets += _symlinked_cases(folder.path)
    return targets


def _symlinked_cases(folder: str) -> list:
    try:
        with os.scandir(folder) as files:
            return [f.path for f in files if f.is_symlink() and is_case_name(f.name)]
    except (FileNotFoundError, NotADirectoryError):  # gone since we listed it: the root's watch reported that
        return []


def _filesystems() -> list:
    """[(mount point, filesystem type)] of this process, the deepest mount points first."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        mounts = []
        for line in f:
            fields = line.split()
            if "-" not in fields[6:]:
                continue
            separator = fields.index("-", 6)  # the optional fields come before it
            mounts.append((re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]), fields[separator + 1]))
    return sorted(mounts, key=lambda mount: len(mount[0]), reverse=True)


def _filesystem(path: str, filesystems: list) -> str | None:
    for mount_point, kind in filesystems:
        if path == mount_point or path.startswith(mount_point.rstrip("/") + "/"):
            return kind
    return None
