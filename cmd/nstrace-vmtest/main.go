// SPDX-License-Identifier: Apache-2.0

// Command nstrace-vmtest runs nstrace's privileged test suite on other
// kernels: for each kernel in kernels.txt it fetches Debian's image
// package, boots it under qemu (software emulation) with an initramfs
// holding the compiled tests, busybox and the tools the tests use, and
// reports pass or fail per kernel, with the failing tests' output. The
// host's kernel runs the same test binaries first. `make test-kernels`
// runs it, as root.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed kernels.txt
var kernelList string

var (
	cacheDir = flag.String("cache", filepath.Join(os.TempDir(), "nstrace-vmtest"), "where kernel packages are kept")
	timeout  = flag.Duration("timeout", 12*time.Minute, "per kernel, boot to power-off")
	only     = flag.String("only", "", "run only kernels whose package matches this")
	noHost   = flag.Bool("no-host", false, "skip the host kernel's run")
	mem      = flag.String("m", "2048", "guest memory (MiB)")
	run      = flag.String("run", "", "run only the tests matching this (go test -run)")
	verbose  = flag.Bool("v", false, "boot without quiet: the guest kernel's messages in the log")
)

// The suites: test packages compiled to static binaries.
var suites = []struct{ name, pkg string }{
	{"probe", "./internal/probe"},
	{"nstrace", "./cmd/nstrace"},
}

// Tools the tests run, taken from the host with their libraries; busybox
// provides the rest (sleep, true, ps, cp, env, mount, poweroff...). The
// host's sh (dash) replaces busybox's, whose built-in applets would not
// exec as the tests expect.
var hostTools = []string{"unshare", "nsenter", "lsns", "setpriv", "ip", "runc", "sh", "promtool"}

// guestSkip are the tests a guest does not run: those of container
// runtimes with daemons (containerd, Docker, Podman), which the host's
// suite runs. runc's container tests run in every guest.
const guestSkip = "TestPrivilegedContainer/^(containerd|docker|podman)$"

// stormN scales the exec storm test for software emulation, which runs
// execs tens of times slower; the test is otherwise the same.
const stormN = "2000"

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fatal("run as root: the suite loads BPF programs")
	}
	work, err := os.MkdirTemp("", "nstrace-vmtest-run")
	if err != nil {
		fatal(err.Error())
	}
	defer os.RemoveAll(work)

	fmt.Println("building the test binaries")
	for _, s := range suites {
		cmd := exec.Command("go", "test", "-c", "-o", filepath.Join(work, s.name+".test"), s.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fatal("building " + s.pkg + ": " + err.Error())
		}
	}

	type result struct {
		kernel string
		ok     bool
		detail string
	}
	var results []result
	if !*noHost {
		out, ok := runHost(work)
		results = append(results, result{"host " + uname(), ok, out})
	}
	initrd := filepath.Join(work, "initrd.cpio")
	if err := buildInitramfs(work, initrd); err != nil {
		fatal("building the initramfs: " + err.Error())
	}
	for _, pattern := range kernels() {
		if *only != "" && !strings.Contains(pattern, *only) {
			continue
		}
		pkg, vmlinuz, err := fetchKernel(pattern)
		if err != nil {
			results = append(results, result{pattern, false, err.Error()})
			continue
		}
		fmt.Printf("booting %s\n", pkg)
		ok, detail := boot(vmlinuz, initrd, filepath.Join(work, pkg+".log"))
		results = append(results, result{pkg, ok, detail})
	}

	fmt.Println()
	passed, failed := 0, 0
	for _, r := range results {
		status := "PASS"
		if r.ok {
			passed++
		} else {
			status = "FAIL"
			failed++
		}
		fmt.Printf("%-4s  %s\n", status, r.kernel)
		if !r.ok {
			fmt.Println(indent(r.detail))
		}
	}
	fmt.Printf("kernels: %d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func kernels() []string {
	var out []string
	for _, line := range strings.Split(kernelList, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// runHost runs the suites on this machine's kernel.
func runHost(work string) (string, bool) {
	var all bytes.Buffer
	ok := true
	for _, s := range suites {
		fmt.Printf("running %s on the host\n", s.name)
		cmd := exec.Command(filepath.Join(work, s.name+".test"), "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "NSTRACE_PRIVILEGED_TESTS=1", "NSTRACE_STORM_N="+stormN)
		out, err := cmd.CombinedOutput()
		all.Write(out)
		if err != nil {
			ok = false
		}
	}
	return failures(all.String()), ok && ranTests(all.String())
}

// fetchKernel downloads the newest package matching pattern and returns
// its name and the path of its vmlinuz.
func fetchKernel(pattern string) (string, string, error) {
	out, err := exec.Command("apt-cache", "search", "--names-only", "^"+globToRegexp(pattern)+"$").Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache search %s: %w", pattern, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, ok := strings.Cut(line, " "); ok {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "", "", fmt.Errorf("no package matches %s (apt-get update?)", pattern)
	}
	sort.Slice(names, func(i, j int) bool { return versionLess(names[i], names[j]) })
	pkg := names[len(names)-1]
	dir := filepath.Join(*cacheDir, pkg)
	if matches, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*")); len(matches) == 1 {
		return pkg, matches[0], nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	dl := exec.Command("apt-get", "download", pkg)
	dl.Dir = dir
	if b, err := dl.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("apt-get download %s: %v: %s", pkg, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("apt-get download %s gave %d packages", pkg, len(debs))
	}
	if b, err := exec.Command("dpkg-deb", "-x", debs[0], dir).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("dpkg-deb -x: %v: %s", err, b)
	}
	os.Remove(debs[0])
	matches, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(matches) != 1 {
		return "", "", fmt.Errorf("%s holds %d kernels", pkg, len(matches))
	}
	return pkg, matches[0], nil
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
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /run/netns /root
ip link set lo up
echo "NSTRACE-VMTEST-KERNEL $(uname -r)"
export NSTRACE_PRIVILEGED_TESTS=1 NSTRACE_STORM_N=` + stormN + `
run=$(sed -n 's/.*nstrace.run=\([^ ]*\).*/\1/p' /proc/cmdline)
status=""
for t in /tests/*.test; do
	"$t" -test.v -test.count=1 -test.timeout=30m -test.run="${run:-.}" -test.skip='` + guestSkip + `'
	status="$status $(basename $t)=$?"
done
echo "NSTRACE-VMTEST-RESULT$status"
poweroff -f
`

func buildInitramfs(work, out string) error {
	r := newInitramfs()
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/sys/fs/cgroup"} {
		r.dir(d)
	}
	r.file("/init", []byte(initScript), 0o755)
	r.file("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	for _, s := range suites {
		if err := r.copyFile(filepath.Join(work, s.name+".test"), "/tests/"+s.name+".test"); err != nil {
			return err
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("busybox is needed (apt-get install busybox-static)")
	}
	if err := r.copyFile(busybox, "/bin/busybox"); err != nil {
		return err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			r.symlink("/bin/"+applet, "busybox")
		}
	}
	for _, tool := range hostTools {
		p, err := exec.LookPath(tool)
		if err != nil {
			return fmt.Errorf("%s is needed on the host", tool)
		}
		dst := "/usr/bin/" + tool
		if tool == "sh" {
			dst = "/bin/sh"
		}
		if err := r.copyFile(p, dst); err != nil {
			return err
		}
		libs, err := sharedLibs(p)
		if err != nil {
			return err
		}
		for _, lib := range libs {
			if err := r.copyFile(lib, lib); err != nil {
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

// sharedLibs lists the libraries a dynamic executable loads, and its
// loader, as ldd resolves them.
func sharedLibs(path string) ([]string, error) {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, nil // static
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// boot runs the guest and reads its verdict from the serial console.
func boot(vmlinuz, initrd, logPath string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", *mem,
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", cmdline(),
		"-nographic", "-no-reboot", "-nic", "none")
	logf, err := os.Create(logPath)
	if err != nil {
		return false, err.Error()
	}
	defer logf.Close()
	var console bytes.Buffer
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return false, "starting qemu: " + err.Error()
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		console.WriteString(line + "\n")
		fmt.Fprintln(logf, line)
		if strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "NSTRACE-VMTEST") {
			fmt.Println("  " + line)
		}
	}
	_ = cmd.Wait()
	text := console.String()
	if ctx.Err() != nil {
		return false, fmt.Sprintf("timed out after %v (console log: %s)\n%s", *timeout, logPath, tail(text, 30))
	}
	verdict := ""
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "NSTRACE-VMTEST-RESULT"); ok {
			verdict = strings.TrimSpace(rest)
		}
	}
	if verdict == "" {
		return false, fmt.Sprintf("the guest did not run the tests (console log: %s)\n%s", logPath, tail(text, 30))
	}
	ok := ranTests(text)
	for _, kv := range strings.Fields(verdict) {
		if !strings.HasSuffix(kv, "=0") {
			ok = false
		}
	}
	if !ok {
		return false, verdict + "\n" + failures(text)
	}
	return true, verdict
}

func cmdline() string {
	c := "console=ttyS0 panic=-1 oops=panic softlockup_panic=1"
	if !*verbose {
		c += " quiet"
	}
	if *run != "" {
		c += " nstrace.run=" + *run
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
