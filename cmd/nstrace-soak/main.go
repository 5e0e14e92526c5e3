// SPDX-License-Identifier: Apache-2.0

// Command nstrace-soak runs nstrace for a long time under churn and says
// whether its memory and file descriptors stay bounded: runc containers
// created and destroyed back to back (each with an exec into it), exec
// storms, network namespaces added, entered and deleted, and the output
// file rotated with SIGHUP every minute, as logrotate does.
//
//	nstrace-soak -nstrace ./nstrace -d 10m
//
// It samples nstrace's resident memory and open descriptors every 10
// seconds and fails unless, at the end, both are within -tolerance of what
// they were after the first minute. As root, with runc, busybox and ip.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nstrace/nstrace/internal/storm"
)

var (
	nstrace   = flag.String("nstrace", "./nstrace", "nstrace binary")
	duration  = flag.Duration("d", 10*time.Minute, "how long the soak runs")
	warmup    = flag.Duration("warmup", time.Minute, "the baseline is taken this long after the start")
	tolerance = flag.Float64("tolerance", 0.10, "allowed growth of RSS and fds from the baseline to the end")
)

type sample struct {
	at       time.Duration
	rssKiB   int
	fds      int
	events   float64
	lost     float64
	churned  int64
	execs    int64
	netnsOps int64
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "nstrace-soak: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	for _, tool := range []string{"runc", "busybox", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed (apt-get install runc busybox-static iproute2)", tool)
		}
	}
	work, err := os.MkdirTemp("", "nstrace-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bundle, err := makeBundle(work)
	if err != nil {
		return err
	}
	feed := filepath.Join(work, "feed.json")
	addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(20000))
	cmd := exec.Command(*nstrace, "--json", "-o", feed, "--metrics-addr", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	if err := waitMetrics(addr); err != nil {
		return err
	}

	var stop atomic.Bool
	var churned, execs, netnsOps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	loop := func(step func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if err := step(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	tag := strconv.Itoa(rand.IntN(1_000_000))
	loop(func(i int) error { // container churn
		id := fmt.Sprintf("soak-%s-%d", tag, i)
		if err := runc(bundle, "run", "-d", id); err != nil {
			return err
		}
		err := runc(bundle, "exec", id, "/bin/true", "soak")
		_ = runc(bundle, "kill", id, "KILL")
		_ = runc(bundle, "delete", "-f", id)
		churned.Add(1)
		return err
	})
	loop(func(i int) error { // exec storms
		if err := storm.Run(500, 1, "/bin/true", "soak-storm"); err != nil {
			return err
		}
		execs.Add(500)
		time.Sleep(time.Second)
		return nil
	})
	loop(func(i int) error { // network namespaces: setns owners
		name := fmt.Sprintf("soak-%s-%d", tag, i)
		for _, args := range [][]string{{"netns", "add", name}, {"netns", "exec", name, "true"}, {"netns", "del", name}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		netnsOps.Add(1)
		time.Sleep(100 * time.Millisecond)
		return nil
	})

	start := time.Now()
	var samples []sample
	fmt.Printf("%8s %10s %5s %12s %6s %11s %9s %7s\n", "time", "RSS KiB", "fds", "events", "lost", "containers", "execs", "netns")
	nextRotate := start.Add(time.Minute)
	for tick := time.NewTicker(10 * time.Second); ; {
		var err error
		select {
		case err = <-errs:
		case <-tick.C:
		}
		if err != nil {
			stop.Store(true)
			wg.Wait()
			return fmt.Errorf("workload: %w", err)
		}
		if time.Now().After(nextRotate) {
			// logrotate: move the file away, SIGHUP, drop the old one.
			_ = os.Rename(feed, feed+".1")
			_ = cmd.Process.Signal(syscall.SIGHUP)
			time.Sleep(200 * time.Millisecond)
			_ = os.Remove(feed + ".1")
			nextRotate = nextRotate.Add(time.Minute)
		}
		s, err := measure(cmd.Process.Pid, addr)
		if err != nil {
			return err
		}
		s.at = time.Since(start).Round(time.Second)
		s.churned, s.execs, s.netnsOps = churned.Load(), execs.Load(), netnsOps.Load()
		samples = append(samples, s)
		fmt.Printf("%8s %10d %5d %12.0f %6.0f %11d %9d %7d\n", s.at, s.rssKiB, s.fds, s.events, s.lost, s.churned, s.execs, s.netnsOps)
		if time.Since(start) >= *duration {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	_ = cmd.Process.Signal(os.Interrupt)
	_, _ = cmd.Process.Wait()

	var base sample
	for _, s := range samples {
		if s.at >= *warmup {
			base = s
			break
		}
	}
	end := samples[len(samples)-1]
	if base.rssKiB == 0 {
		return fmt.Errorf("ran %v, shorter than the %v warm-up", end.at, *warmup)
	}
	rss := float64(end.rssKiB)/float64(base.rssKiB) - 1
	fds := float64(end.fds)/float64(base.fds) - 1
	fmt.Printf("after %v: RSS %d KiB, %d fds; at the end (%v): RSS %d KiB (%+.1f%%), %d fds (%+.1f%%)\n",
		base.at, base.rssKiB, base.fds, end.at, end.rssKiB, 100*rss, end.fds, 100*fds)
	if rss > *tolerance || fds > *tolerance {
		return fmt.Errorf("grew by more than %.0f%%", 100**tolerance)
	}
	fmt.Println("PASS: memory and fds bounded")
	return nil
}

func makeBundle(work string) (string, error) {
	dir := filepath.Join(work, "bundle")
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	busybox, _ := exec.LookPath("busybox")
	if out, err := exec.Command("cp", busybox, filepath.Join(bin, "busybox")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cp: %v: %s", err, out)
	}
	for _, a := range []string{"sh", "sleep", "true"} {
		if err := os.Symlink("busybox", filepath.Join(bin, a)); err != nil {
			return "", err
		}
	}
	spec := exec.Command("runc", "spec")
	spec.Dir = dir
	if out, err := spec.CombinedOutput(); err != nil {
		return "", fmt.Errorf("runc spec: %v: %s", err, out)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", err
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/sh", "-c", "sleep 3600"}
	b, _ = json.Marshal(cfg)
	return dir, os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

func runc(dir string, args ...string) error {
	cmd := exec.Command("runc", args...)
	cmd.Dir = dir
	// No stdio for a detached container to keep open.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc %v: %w", args, err)
	}
	return nil
}

func waitMetrics(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := scrape(addr); err == nil {
			return nil
		}
	}
	return fmt.Errorf("nstrace's metrics at %s never answered", addr)
}

func scrape(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

var (
	eventsRe = regexp.MustCompile(`(?m)^nstrace_events_total\{[^}]*\} (\S+)$`)
	lostRe   = regexp.MustCompile(`(?m)^nstrace_lost_events_total\{[^}]*\} (\S+)$`)
	rssRe    = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`)
)

func measure(pid int, addr string) (sample, error) {
	var s sample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("nstrace is gone: %w", err)
	}
	if m := rssRe.FindSubmatch(status); m != nil {
		s.rssKiB, _ = strconv.Atoi(string(m[1]))
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	text, err := scrape(addr)
	if err != nil {
		return s, err
	}
	s.events, s.lost = sum(eventsRe, text), sum(lostRe, text)
	return s, nil
}

func sum(re *regexp.Regexp, text string) float64 {
	var t float64
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(strings.TrimSpace(m[1]), 64)
		t += v
	}
	return t
}
