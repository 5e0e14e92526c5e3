// SPDX-License-Identifier: Apache-2.0

// Command nstrace-vmtest runs nstrace's privileged test suite on other
// kernels: for each guest in kernels.txt it fetches Debian's image
// package, boots it under qemu (software emulation, x86_64 or arm64)
// with an initramfs holding the compiled tests, busybox and the tools
// the tests use, and reports pass or fail per guest, with the failing
// tests' output. The host's kernel runs the same test binaries first.
// `make test-kernels` runs it, as root.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed kernels.txt
var kernelList string

var (
	cacheDir = flag.String("cache", filepath.Join(os.TempDir(), "nstrace-vmtest"), "where kernel packages and guest tools are kept")
	timeout  = flag.Duration("timeout", 20*time.Minute, "per guest, boot to power-off")
	only     = flag.String("only", "", "run only guests whose line in kernels.txt contains this")
	noHost   = flag.Bool("no-host", false, "skip the host kernel's run")
	jobs     = flag.Int("j", 2, "guests run at once")
	mem      = flag.String("m", "2048", "guest memory (MiB)")
	run      = flag.String("run", "", "run only the tests matching this (go test -run)")
	verbose  = flag.Bool("v", false, "boot without quiet: the guest kernel's messages in the log")
)

// The suites: test packages compiled to static binaries.
var suites = []struct{ name, pkg string }{
	{"probe", "./internal/probe"},
	{"nstrace", "./cmd/nstrace"},
}

// guestSkip are the tests a guest does not run, which the host's suite
// runs: those of container runtimes with daemons (containerd, Docker,
// Podman, and pods through containerd's CRI), and the man page's
// rendering (no groff in a guest; the page does not depend on the
// kernel). runc's container tests run in every guest. Top-level
// alternatives, each a test/subtest path.
const guestSkip = "TestPrivilegedContainer/^(containerd|docker|podman)$" +
	"|^TestPrivilegedNSSharedBy(Containers|Pod)$|^TestPrivilegedPods$|^TestManPageRenders$"

// cgroupV1Mounts are the cgroup v1 hierarchies a cgroup=v1 guest mounts,
// as a legacy-layout init does (cpu and cpuacct together).
const cgroupV1Mounts = "pids memory cpu,cpuacct devices freezer blkio cpuset"

// stormN scales the exec storm test for software emulation, which runs
// execs tens of times slower; the test is otherwise the same.
const stormN = "2000"

// arch is how to build for and boot one architecture.
type arch struct {
	goarch, deb, triplet string
	qemu                 string
	machine              []string
	console              string
}

var arches = map[string]arch{
	"amd64": {"amd64", "amd64", "x86_64-linux-gnu", "qemu-system-x86_64", []string{"-cpu", "max"}, "ttyS0"},
	// pauth-impdef: pointer authentication (which Debian's arm64 kernel
	// uses) by a cheap implementation-defined hash instead of QARMA,
	// whose emulation costs more than the rest of the guest.
	"arm64": {"arm64", "arm64", "aarch64-linux-gnu", "qemu-system-aarch64", []string{"-M", "virt", "-cpu", "max,pauth-impdef=on"}, "ttyAMA0"},
}

// guest is one line of kernels.txt: a kernel package pattern, the CPUs
// to give it, the syscall hook path the suite must use, the cgroup
// hierarchies mounted, and the tests run if not all.
type guest struct {
	line    string
	pattern string
	arch    arch
	smp     int
	hooks   string
	cgroup  string
	run     string
}

func parseGuests(text string) ([]guest, error) {
	var out []guest
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		g := guest{line: line, pattern: f[0], arch: arches["amd64"], smp: 2, hooks: "fentry", cgroup: "v2"}
		if strings.Contains(g.pattern, "-arm64") {
			g.arch = arches["arm64"]
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "smp":
				i, err := strconv.Atoi(v)
				if err != nil || i < 1 {
					return nil, fmt.Errorf("kernels.txt:%d: smp=%q", n+1, v)
				}
				g.smp = i
			case "hooks":
				if v != "fentry" && v != "tracepoint" {
					return nil, fmt.Errorf("kernels.txt:%d: hooks=%q is not fentry or tracepoint", n+1, v)
				}
				g.hooks = v
			case "cgroup":
				if v != "v1" && v != "v2" {
					return nil, fmt.Errorf("kernels.txt:%d: cgroup=%q is not v1 or v2", n+1, v)
				}
				g.cgroup = v
			case "run":
				if v == "" {
					return nil, fmt.Errorf("kernels.txt:%d: run= names no tests", n+1)
				}
				g.run = v
			default:
				return nil, fmt.Errorf("kernels.txt:%d: unknown option %q", n+1, kv)
			}
		}
		out = append(out, g)
	}
	return out, nil
}

type result struct {
	name   string
	ok     bool
	detail string
	took   time.Duration
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fatal("run as root: the suite loads BPF programs")
	}
	all, err := parseGuests(kernelList)
	if err != nil {
		fatal(err.Error())
	}
	var guests []guest
	for _, g := range all {
		if *only == "" || strings.Contains(g.line, *only) {
			guests = append(guests, g)
		}
	}
	work, err := os.MkdirTemp("", "nstrace-vmtest-run")
	if err != nil {
		fatal(err.Error())
	}
	defer os.RemoveAll(work)
	start := time.Now()

	ap := newApt(*cacheDir)
	hostArch := arches["amd64"]
	initrds := map[string]string{}
	need := map[string]bool{}
	if !*noHost {
		need[hostArch.goarch] = true
	}
	for _, g := range guests {
		need[g.arch.goarch] = true
	}
	for goarch := range need {
		a := arches[goarch]
		dir := filepath.Join(work, goarch)
		fmt.Printf("building the test binaries (%s)\n", goarch)
		if err := buildTests(a, dir); err != nil {
			fatal(err.Error())
		}
		if !hasGuest(guests, goarch) {
			continue
		}
		u := hostUserland(a)
		if a.goarch != hostArch.goarch {
			if u, err = fetchUserland(ap, a, filepath.Join(*cacheDir, "userland-"+goarch)); err != nil {
				fatal("fetching the " + goarch + " tools: " + err.Error())
			}
		}
		initrds[goarch] = filepath.Join(dir, "initrd.cpio")
		if err := buildInitramfs(u, dir, initrds[goarch]); err != nil {
			fatal("building the " + goarch + " initramfs: " + err.Error())
		}
	}

	var results []result
	if !*noHost {
		t0 := time.Now()
		out, ok := runHost(filepath.Join(work, hostArch.goarch))
		results = append(results, result{"host " + uname(), ok, out, time.Since(t0)})
	}

	// Kernels first, one at a time (apt), then the guests in parallel.
	type booting struct {
		g       guest
		pkg     string
		vmlinuz string
	}
	var boots []booting
	for _, g := range guests {
		pkg, vmlinuz, err := fetchKernel(ap, g.pattern)
		if err != nil {
			results = append(results, result{name: g.line, detail: err.Error()})
			continue
		}
		boots = append(boots, booting{g, pkg, vmlinuz})
	}
	guestResults := make([]result, len(boots))
	next := make(chan int, len(boots))
	for i := range boots {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range max(*jobs, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b := boots[i]
				name := fmt.Sprintf("%s (%s, %d CPU%s, %s, cgroup %s)", b.pkg, b.g.arch.goarch, b.g.smp, plural(b.g.smp), b.g.hooks, b.g.cgroup)
				tag := fmt.Sprintf("[%d]", i+1)
				fmt.Printf("%s booting %s\n", tag, name)
				t0 := time.Now()
				ok, detail := boot(b.g, b.vmlinuz, initrds[b.g.arch.goarch], filepath.Join(work, fmt.Sprintf("guest%d.log", i+1)), tag)
				guestResults[i] = result{name, ok, detail, time.Since(t0)}
				fmt.Printf("%s done in %v: %s\n", tag, time.Since(t0).Round(time.Second), passFail(ok))
			}
		}()
	}
	wg.Wait()
	results = append(results, guestResults...)

	fmt.Println()
	passed, failed := 0, 0
	for _, r := range results {
		if r.ok {
			passed++
		} else {
			failed++
		}
		fmt.Printf("%-4s  %s  %v\n", passFail(r.ok), r.name, r.took.Round(time.Second))
		if !r.ok {
			fmt.Println(indent(r.detail))
		}
	}
	fmt.Printf("kernels: %d passed, %d failed, %v in all\n", passed, failed, time.Since(start).Round(time.Second))
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func hasGuest(gs []guest, goarch string) bool {
	for _, g := range gs {
		if g.arch.goarch == goarch {
			return true
		}
	}
	return false
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// buildTests compiles the suites as static binaries for a into dir.
func buildTests(a arch, dir string) error {
	for _, s := range suites {
		cmd := exec.Command("go", "test", "-c", "-o", filepath.Join(dir, s.name+".test"), s.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+a.goarch)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s for %s: %w", s.pkg, a.goarch, err)
		}
	}
	return nil
}

// runHost runs the suites on this machine's kernel.
func runHost(dir string) (string, bool) {
	var all bytes.Buffer
	ok := true
	for _, s := range suites {
		fmt.Printf("running %s on the host\n", s.name)
		cmd := exec.Command(filepath.Join(dir, s.name+".test"), "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "NSTRACE_PRIVILEGED_TESTS=1", "NSTRACE_STORM_N="+stormN)
		out, err := cmd.CombinedOutput()
		all.Write(out)
		if err != nil {
			ok = false
		}
	}
	return failures(all.String()), ok && ranTests(all.String())
}

// fetchKernel downloads the newest package matching pattern that the
// archive really serves (an index may list a package its pool lacks) and
// returns its name and the path of its kernel image.
func fetchKernel(ap *apt, pattern string) (string, string, error) {
	names, err := ap.search(pattern)
	if err != nil {
		return "", "", err
	}
	if len(names) == 0 {
		return "", "", fmt.Errorf("no package matches %s", pattern)
	}
	var errs []string
	for _, pkg := range names {
		dir := filepath.Join(*cacheDir, pkg)
		if k, err := kernelImage(dir); err == nil {
			return pkg, k, nil
		}
		os.RemoveAll(dir)
		fmt.Printf("fetching %s\n", pkg)
		if err := ap.download(dir, pkg); err != nil {
			errs = append(errs, err.Error())
			os.RemoveAll(dir)
			continue
		}
		k, err := kernelImage(dir)
		if err != nil {
			return "", "", err
		}
		return pkg, k, nil
	}
	return "", "", fmt.Errorf("no package matching %s could be fetched:\n%s", pattern, strings.Join(errs, "\n"))
}

// kernelImage finds the kernel in an unpacked package; a gzip'd image
// (as some arm64 packages ship) is unpacked beside it, since qemu boots
// an arm64 Image only uncompressed.
func kernelImage(dir string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(matches) != 1 {
		return "", fmt.Errorf("%s holds %d kernels", dir, len(matches))
	}
	f, err := os.Open(matches[0])
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, 2)
	if _, err := io.ReadFull(f, magic); err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return matches[0], nil
	}
	out := matches[0] + ".unpacked"
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	f.Seek(0, io.SeekStart)
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", err
	}
	w, err := os.Create(out + ".tmp")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, zr); err != nil {
		w.Close()
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(out+".tmp", out)
}

func globToRegexp(g string) string {
	return strings.ReplaceAll(regexp.QuoteMeta(g), `\*`, ".*")
}

// versionLess orders package names by their embedded numbers.
func versionLess(a, b string) bool {
	num := regexp.MustCompile(`\d+|\D+`)
	pa, pb := num.FindAllString(a, -1), num.FindAllString(b, -1)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscan(pa[i], &na)
		_, eb := fmt.Sscan(pb[i], &nb)
		if ea == nil && eb == nil {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

const initScript = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
# The initramfs cannot be pivot_root'ed away from, which runc does: move
# to a tmpfs root first.
if [ ! -e /.switched ]; then
	mkdir /newroot
	mount -t tmpfs -o size=80% root /newroot
	for d in /*; do
		case "$d" in /newroot|/proc|/sys|/dev) mkdir -p "/newroot$d" ;; *) cp -a "$d" /newroot/ ;; esac
	done
	touch /newroot/.switched
	exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
arg() { sed -n "s/.*nstrace\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
# cgroup v2 (as a modern init mounts it), or cgroup v1 alone: a v1
# hierarchy for each of these controllers under a tmpfs, as on a host
# whose init uses the legacy layout, and no cgroup2 mount anywhere.
if [ "$(arg cgroup)" = v1 ]; then
	mount -t tmpfs cgroup /sys/fs/cgroup
	for c in ` + cgroupV1Mounts + `; do
		mkdir /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
	done
else
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi
mkdir -p /dev/pts /run/netns /root
# /dev/fd, as udev or an init makes it on a real system: runc re-executes
# its sealed copy with execveat(fd, "", AT_EMPTY_PATH), which Debian's
# 5.10.223 fails with ENOENT where /dev/fd is missing (as in
# opencontainers/runc issue 2552).
ln -s /proc/self/fd /dev/fd
ip link set lo up
hooks=$(arg hooks)
echo "NSTRACE-VMTEST-KERNEL $(uname -r) $(uname -m) $(nproc) CPUs, syscall hooks ${hooks:-auto}, cgroup $(arg cgroup)"
export NSTRACE_PRIVILEGED_TESTS=1 NSTRACE_STORM_N=` + stormN + ` NSTRACE_SYSCALL_HOOKS=$hooks
run=$(arg run)
status=""
for t in /tests/*.test; do
	"$t" -test.v -test.count=1 -test.timeout=30m -test.run="${run:-.}" -test.skip='` + guestSkip + `'
	status="$status $(basename $t)=$?"
done
echo "NSTRACE-VMTEST-RESULT$status"
poweroff -f
`

func buildInitramfs(u *userland, dir, out string) error {
	r := newInitramfs()
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/sys/fs/cgroup"} {
		r.dir(d)
	}
	r.file("/init", []byte(initScript), 0o755)
	r.file("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	for _, s := range suites {
		if err := r.copyFile(filepath.Join(dir, s.name+".test"), "/tests/"+s.name+".test"); err != nil {
			return err
		}
	}
	busybox, err := u.busybox()
	if err != nil {
		return err
	}
	if err := r.copyFile(busybox, "/bin/busybox"); err != nil {
		return err
	}
	// The list of applets, from the host's busybox (the guest's may be of
	// another architecture): the same Debian package.
	list, err := exec.Command("busybox", "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w (apt-get install busybox-static)", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			r.symlink("/bin/"+applet, "busybox")
		}
	}
	for _, tool := range guestTools {
		p, err := u.tool(tool)
		if err != nil {
			return err
		}
		dst := "/usr/bin/" + tool
		if tool == "sh" {
			dst = "/bin/sh"
		}
		if err := r.copyFile(p, dst); err != nil {
			return err
		}
		libs, err := u.libs(p)
		if err != nil {
			return err
		}
		for guestPath, hostPath := range libs {
			if err := r.copyFile(hostPath, guestPath); err != nil {
				return err
			}
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := r.write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// boot runs the guest and reads its verdict from the serial console.
func boot(g guest, kernel, initrd, logPath, tag string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	args := append([]string{}, g.arch.machine...)
	accel := "tcg"
	if g.smp > 1 {
		// One host thread per guest CPU: plain TCG runs every CPU on one
		// thread, which gives no real concurrency.
		accel = "tcg,thread=multi"
	}
	args = append(args, "-accel", accel, "-smp", strconv.Itoa(g.smp), "-m", *mem,
		"-kernel", kernel, "-initrd", initrd,
		"-append", cmdline(g),
		"-nographic", "-no-reboot", "-nic", "none")
	cmd := exec.CommandContext(ctx, g.arch.qemu, args...)
	logf, err := os.Create(logPath)
	if err != nil {
		return false, err.Error()
	}
	defer logf.Close()
	var console bytes.Buffer
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return false, "starting " + g.arch.qemu + ": " + err.Error()
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		console.WriteString(line + "\n")
		fmt.Fprintln(logf, line)
		// The firmware's screen codes may precede the first line.
		if i := strings.Index(line, "NSTRACE-VMTEST"); i >= 0 {
			fmt.Println(tag + " " + line[i:])
		} else if strings.HasPrefix(line, "--- FAIL") {
			fmt.Println(tag + " " + line)
		}
	}
	_ = cmd.Wait()
	text := console.String()
	keep := filepath.Join(*cacheDir, "logs", filepath.Base(logPath))
	if os.MkdirAll(filepath.Dir(keep), 0o755) == nil {
		_ = os.WriteFile(keep, []byte(text), 0o644)
	}
	if ctx.Err() != nil {
		return false, fmt.Sprintf("timed out after %v (console log: %s)\n%s", *timeout, keep, tail(text, 30))
	}
	verdict := ""
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "NSTRACE-VMTEST-RESULT"); ok {
			verdict = strings.TrimSpace(rest)
		}
	}
	if verdict == "" {
		return false, fmt.Sprintf("the guest did not run the tests (console log: %s)\n%s", keep, tail(text, 30))
	}
	ok := ranTests(text)
	for _, kv := range strings.Fields(verdict) {
		if !strings.HasSuffix(kv, "=0") {
			ok = false
		}
	}
	if !ok {
		return false, verdict + " (console log: " + keep + ")\n" + failures(text)
	}
	return true, verdict
}

func cmdline(g guest) string {
	c := "console=" + g.arch.console + " panic=-1 oops=panic softlockup_panic=1 nstrace.hooks=" + g.hooks + " nstrace.cgroup=" + g.cgroup
	if !*verbose {
		c += " quiet"
	}
	// -run, if given, over the guest's own choice.
	if r := cmp.Or(*run, g.run); r != "" {
		c += " nstrace.run=" + r
	}
	return c
}

// ranTests checks that tests really ran: privileged ones passed, none
// were skipped.
func ranTests(out string) bool {
	return strings.Contains(out, "--- PASS: TestPrivileged") && !strings.Contains(out, "--- SKIP: TestPrivileged")
}

// failures keeps the failing tests' lines of go test -v output.
func failures(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--- FAIL") || strings.HasPrefix(t, "--- SKIP") || strings.Contains(line, "_test.go:") || strings.HasPrefix(t, "panic") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func uname() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "nstrace-vmtest:", msg)
	os.Exit(1)
}
