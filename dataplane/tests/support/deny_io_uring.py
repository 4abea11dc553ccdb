#!/usr/bin/python3
"""Runs a command with io_uring_setup(2) failing with EPERM, as under Docker's default
seccomp profile or with kernel.io_uring_disabled=2.

Usage: deny_io_uring.py PROGRAM [ARGS...]   (needs Debian's python3-seccomp)
The seccomp filter is inherited across execve, so the kernel really refuses the ring.
"""
import errno
import os
import sys

import seccomp

syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
syscall_filter.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
syscall_filter.load()
os.execv(sys.argv[1], sys.argv[1:])
