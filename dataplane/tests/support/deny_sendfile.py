#!/usr/bin/python3
"""Runs a command with sendfile(2) failing with EINVAL, as on filesystems without it.

Usage: deny_sendfile.py PROGRAM [ARGS...]   (needs Debian's python3-seccomp)
The seccomp filter is inherited across execve, so the kernel really refuses sendfile.
"""
import errno
import os
import sys

import seccomp

syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
syscall_filter.add_rule(seccomp.ERRNO(errno.EINVAL), "sendfile")
syscall_filter.load()
os.execv(sys.argv[1], sys.argv[1:])
