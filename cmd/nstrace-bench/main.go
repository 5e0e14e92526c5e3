// SPDX-License-Identifier: Apache-2.0

// Command nstrace-bench measures what tracing process events costs: an exec
// storm run bare, under nstrace (both views) and under the peers that are
// installed (forkstat, bpftrace), interleaved in rounds on one machine. It
// prints the median storm time and its ratio to bare, the share of the
// storm's execs each tracer reported, the time from launch to the first
// event, and peak RSS; then the highest event rate nstrace sustains without
// loss. Then what each tracer costs per event: ns per run of each BPF
// program (bpf_stats), its own CPU per event at a steady low rate and in
// the storm, system calls per event, CPU at idle, and the slowdown of a
// syscall-bound dd. Run it as root; `make bench` builds what it needs;
// -quick is a shorter run.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	nstrace = flag.String("nstrace", "./nstrace", "nstrace binary")
	stormB  = flag.String("storm", "./execstorm", "execstorm binary")
	n       = flag.Int("n", 3000, "execs per storm")
	workers = flag.Int("w", 2, "storm workers")
	rounds  = flag.Int("rounds", 5, "rounds")
	peers   = flag.Bool("peers", true, "also measure forkstat and bpftrace when installed")
	quick   = flag.Bool("quick", false, "a shorter run: fewer rounds and execs, 5 s of idle")
	floorB  = flag.Bool("floor", false, "only the floor: what programs that do (almost) nothing cost here")
)

// tracer is one way of watching the storm.
type tracer struct {
	name  string
	argv  func(out string) []string // nil: bare
	times []float64
	seen  []float64
	rss   []int64
	start []time.Duration
	bpf   bool // its BPF programs' run times are reported
	idle  bool // measured at idle and under dd

	cpu    uint64  // CPU ns used during the storms
	events int     // events written during the storms
	secs   float64 // the storms' time
	rate   float64 // events a second during the storms
}

func main() {
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			*rounds = 2
		}
		if !set["n"] {
			*n = 1000
		}
	}
	if os.Geteuid() != 0 {
		fatal("run as root (the tracers load BPF programs)")
	}
	if *floorB {
		undo, err := statsOn()
		if err != nil {
			fatal(fmt.Sprintf("turning on kernel.bpf_stats_enabled: %v", err))
		}
		defer undo()
		floorTable()
		return
	}
	dir, err := os.MkdirTemp("", "nstrace-bench")
	if err != nil {
		fatal(err.Error())
	}
	defer os.RemoveAll(dir)

	tracers := []*tracer{
		{name: "bare"},
		{name: "nstrace -e exec", idle: true, argv: func(out string) []string { return []string{*nstrace, "-e", "exec", "-o", out} }},
		{name: "nstrace -e exec --json", argv: func(out string) []string {
			return []string{*nstrace, "-e", "exec", "--json", "-o", out}
		}},
		{name: "nstrace (all events) --json", bpf: true, idle: true, argv: func(out string) []string {
			return []string{*nstrace, "--json", "-o", out}
		}},
	}
	var cleanup []func()
	defer func() {
		for _, f := range cleanup {
			f()
		}
	}()
	if *peers {
		if path, err := exec.LookPath("forkstat"); err == nil {
			// Line-buffered, or its first lines would sit in stdio's buffer.
			tracers = append(tracers, &tracer{name: "forkstat -e exec", idle: true, argv: func(out string) []string {
				return []string{"sh", "-c", "exec stdbuf -oL " + path + " -e exec > " + out}
			}})
		} else {
			fmt.Println("forkstat not installed: skipped (apt-get install forkstat)")
		}
		if path, err := exec.LookPath("bpftrace"); err == nil {
			if undo, err := ensureTracefs(); err != nil {
				fmt.Printf("bpftrace skipped: %v\n", err)
			} else {
				cleanup = append(cleanup, undo)
				prog := `tracepoint:sched:sched_process_exec { printf("%s\n", str(args->filename)); }`
				tracers = append(tracers, &tracer{name: "bpftrace exec one-liner", bpf: true, idle: true, argv: func(out string) []string {
					return []string{"sh", "-c", "exec stdbuf -oL " + path + " -e '" + prog + "' > " + out + " 2>/dev/null"}
				}})
			}
		} else {
			fmt.Println("bpftrace not installed: skipped (apt-get install bpftrace)")
		}
	}

	// The storm runs a copy of /bin/true whose name carries a marker, so
	// every tracer's output (even a filename-only one) can be counted.
	prog := filepath.Join(dir, "true-nstbench")
	if err := copyFile("/bin/true", prog); err != nil {
		fatal(err.Error())
	}

	fmt.Printf("exec storm: %d execs of %s from %d workers, %d rounds\n", *n, prog, *workers, *rounds)
	var steal stealMeter
	steal.since()
	for r := 0; r < *rounds; r++ {
		// Rotate the order so no tracer always runs first or last.
		for i := range tracers {
			t := tracers[(i+r)%len(tracers)]
			if err := measure(t, dir, prog); err != nil {
				fatal(fmt.Sprintf("%s: %v", t.name, err))
			}
		}
		fmt.Printf("round %d done\n", r+1)
	}

	bare := median(tracers[0].times)
	fmt.Println()
	fmt.Printf("%-30s %9s %7s %9s %10s %9s\n", "tracer", "median s", "ratio", "reported", "startup", "peak RSS")
	for _, t := range tracers {
		m := median(t.times)
		if t.argv == nil {
			fmt.Printf("%-30s %9.3f %7.3f %9s %10s %9s\n", t.name, m, 1.0, "-", "-", "-")
			continue
		}
		fmt.Printf("%-30s %9.3f %7.3f %8.1f%% %8.0fms %7.1fMiB\n", t.name, m, m/bare,
			100*median(t.seen), float64(medianDur(t.start))/1e6, float64(maxI(t.rss))/(1<<20))
	}
	fmt.Printf("(host steal during the rounds: %s)\n\n", steal.since())
	rateTable(dir)
	fmt.Printf("(host steal during this table: %s)\n\n", steal.since())
	for _, t := range tracers {
		if t.secs > 0 {
			t.rate = float64(t.events) / t.secs
		}
	}
	costs(tracers, dir, prog)
}

func measure(t *tracer, dir, prog string) error {
	marker := fmt.Sprintf("m%d", rand.IntN(1<<30))
	link := prog + "-" + marker
	if err := os.Symlink(prog, link); err != nil {
		return err
	}
	defer os.Remove(link)
	var cmd *exec.Cmd
	out := filepath.Join(dir, "out-"+marker)
	defer os.Remove(out)
	if t.argv != nil {
		var err error
		launched := time.Now()
		if cmd, err = startTracer(t, out, dir); err != nil {
			return err
		}
		t.start = append(t.start, time.Since(launched))
	}
	var c0 uint64
	var e0 int
	if cmd != nil {
		c0 = cpuNS(cmd.Process.Pid)
		e0, _ = countLines(out, "")
	}
	secs, err := storm(link)
	if err != nil {
		return err
	}
	t.times = append(t.times, secs)
	if cmd == nil {
		return nil
	}
	time.Sleep(300 * time.Millisecond) // let the tracer drain
	e1, _ := countLines(out, "")
	t.cpu += cpuNS(cmd.Process.Pid) - c0
	t.events += e1 - e0
	t.secs += secs
	t.rss = append(t.rss, peakRSS(cmd.Process.Pid))
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	count, err := countLines(out, marker)
	if err != nil {
		return err
	}
	t.seen = append(t.seen, float64(count)/float64(*n))
	return nil
}

// startTracer starts t and returns once it reports its first event: a
// probe program runs every 2 ms until its exec shows in the output, so the
// time this takes is the tracer's startup to first event.
func startTracer(t *tracer, out, dir string) (*exec.Cmd, error) {
	argv := t.argv(out)
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	probe := filepath.Join(dir, fmt.Sprintf("true-probe-%d", rand.IntN(1<<30)))
	if err := os.Symlink("/bin/true", probe); err != nil {
		return nil, err
	}
	defer os.Remove(probe)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		_ = exec.Command(probe).Run()
		if n, _ := countLines(out, probe); n > 0 {
			return cmd, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, errors.New("no first event within 15 s")
}

func storm(path string) (float64, error) {
	out, err := exec.Command(*stormB, "-n", strconv.Itoa(*n), "-w", strconv.Itoa(*workers), "-path", path).Output()
	if err != nil {
		return 0, fmt.Errorf("storm: %w", err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

// rateTable finds the highest rate of namespace-call events nstrace keeps
// up with, in JSON to /dev/null, without loss.
func rateTable(dir string) {
	fmt.Println("sustained event rate, nstrace -e unshare --json -o /dev/null, 2 s per step:")
	fmt.Printf("%12s %12s %12s %10s %12s\n", "asked/s", "made/s", "reported/s", "lost", "CPU µs/ev")
	best := 0.0
	for _, rate := range []int{25000, 50000, 100000, 200000, 400000, 800000} {
		cmd := exec.Command(*nstrace, "-e", "unshare", "--json", "-o", os.DevNull, "--ready-fd=3")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		r, w, _ := os.Pipe()
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			fatal(err.Error())
		}
		w.Close()
		_, _ = r.Read(make([]byte, 1))
		r.Close()
		c0 := cpuNS(cmd.Process.Pid)
		start := time.Now()
		out, err := exec.Command(*stormB, "-unshare-rate", strconv.Itoa(rate), "-d", "2s").Output()
		elapsed := time.Since(start).Seconds()
		if err != nil {
			fatal(err.Error())
		}
		made, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		time.Sleep(300 * time.Millisecond)
		cpu := cpuNS(cmd.Process.Pid) - c0
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		var seen, lost int
		fmt.Sscanf(stderr.String(), "nstrace: %d events, %d lost", &seen, &lost)
		fmt.Printf("%12d %12.0f %12.0f %10d %12s\n", rate, float64(made)/elapsed, float64(seen)/elapsed, lost, perEvent(cpu, seen))
		if lost == 0 && seen >= made && float64(seen)/elapsed > best {
			best = float64(seen) / elapsed
		}
	}
	fmt.Printf("highest rate sustained without loss: %.0f events/s\n", best)
}

// ensureTracefs mounts tracefs for bpftrace if it is not, and returns how
// to undo that.
func ensureTracefs() (func(), error) {
	b, _ := os.ReadFile("/proc/self/mounts")
	if bytes.Contains(b, []byte(" tracefs ")) {
		return func() {}, nil
	}
	const at = "/sys/kernel/tracing"
	if err := syscall.Mount("nodev", at, "tracefs", 0, ""); err != nil {
		return nil, fmt.Errorf("bpftrace needs tracefs and mounting it failed: %w", err)
	}
	return func() { _ = syscall.Unmount(at, 0) }, nil
}

func countLines(path, text string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(text)) {
			n++
		}
	}
	return n, nil
}

func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func medianDur(v []time.Duration) time.Duration {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}

func maxI(v []int64) int64 {
	m := int64(0)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "nstrace-bench:", msg)
	os.Exit(1)
}
