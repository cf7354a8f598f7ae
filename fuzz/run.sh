#!/bin/sh
# Runs the args parser fuzz target for a bounded time (default 60 s).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-60}"
mkdir -p fuzz/corpus/args_parser
printf '%s' '{"name":"calico-kube-controllers","_ansible_check_mode":true}' > fuzz/corpus/args_parser/seed-calico
printf '%s' '{"detect":"yes","exclude":"a,b","kind":"mutating","force":1}' > fuzz/corpus/args_parser/seed-webhook
printf '%s' '{"extra_rules":["{api_groups: [\"\"], resources: [pods], verbs: [get]}"],"validate_certs":"no"}' > fuzz/corpus/args_parser/seed-rules
exec cargo +nightly fuzz run args_parser fuzz/corpus/args_parser -- -max_total_time="$seconds" -max_len=4096
