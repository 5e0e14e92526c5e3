module github.com/nstrace/nstrace

go 1.24.0

require (
	github.com/cilium/ebpf v0.20.0
	github.com/spf13/pflag v1.0.10
	golang.org/x/sys v0.37.0
)

tool github.com/cilium/ebpf/cmd/bpf2go
