#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Refresh the libbpf headers nstrace builds against from the system's
# libbpf-dev (apt-get install libbpf-dev). kernel.h is ours and hand-kept.
set -eu
cd "$(dirname "$0")"
for h in bpf_helpers.h bpf_helper_defs.h bpf_tracing.h bpf_core_read.h; do
	cp "/usr/include/bpf/$h" "$h"
done
