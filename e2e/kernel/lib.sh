#!/bin/sh
# Helpers shared by workload.sh and steps.sh (sourced; they set `mode` and `me`).

# report STEP STATUS [DETAIL...]: one line the host reads.
report() {
  name=$1 status=$2
  shift 2
  echo "ZN-STEP $mode $me $name $status $*"
}
# step NAME COMMAND...: runs COMMAND (usually a shell function) and reports it, with the
# first 300 characters of its output when it fails; a ZN-T line marks when it started.
step() {
  name=$1
  shift
  echo "ZN-T $(cut -d' ' -f1 /proc/uptime) $mode $me $name"
  out=$("$@" 2>&1)
  if [ $? -eq 0 ]; then report "$name" ok; else report "$name" FAIL "$(echo "$out" | tr '\n' ' ' | cut -c1-300)"; fi
}
# expect_equal WHAT GOT WANT
expect_equal() {
  [ "$2" = "$3" ] || { echo "$1: got '$2', want '$3'"; return 1; }
}
# refused MESSAGE COMMAND...: COMMAND must fail, saying MESSAGE (its errno's text).
refused() {
  want=$1
  shift
  if err=$("$@" 2>&1 >/dev/null); then echo "allowed: $*"; return 1; fi
  case $err in *"$want"*) return 0 ;; esac
  echo "refused with '$err', want '$want': $*"
  return 1
}
