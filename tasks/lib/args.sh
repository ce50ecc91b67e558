#!/usr/bin/env bash
# Sourced by the tasks that take files: their files and their flags may come in any order.
#   split_args "--flag-with-value ..." "$@"
# sets two arrays: `positional` (the words that are not flags, in order) and `flags` (every flag,
# each followed by its value when it is one of the listed flags that take one as the next word;
# --flag=value is one word). After `--` every word is positional.
split_args() {
  local takes_value=" $1 "
  shift
  positional=()
  flags=()
  while (($#)); do
    case "$1" in
      --)
        shift
        positional+=("$@")
        break
        ;;
      -?*)
        flags+=("$1")
        if [[ "$takes_value" == *" $1 "* && $# -gt 1 ]]; then
          flags+=("$2")
          shift
        fi
        ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
}

# has_flag NAME: whether `flags` (after split_args) holds NAME or NAME=value.
has_flag() {
  local flag
  for flag in "${flags[@]}"; do
    [[ "$flag" == "$1" || "$flag" == "$1="* ]] && return 0
  done
  return 1
}
