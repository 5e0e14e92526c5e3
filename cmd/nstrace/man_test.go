// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// helpFlags are the flag names a --help text lists: "-e", "--events".
var helpFlags = regexp.MustCompile(`(?m)^\s+(?:(-[a-zA-Z]), )?(--[a-z][a-z-]*)`)

// TestManPageHasEveryHelpFlag: every flag --help shows, for nstrace and
// nstrace ns, is in the man page, and no hidden one is.
func TestManPageHasEveryHelpFlag(t *testing.T) {
	var page bytes.Buffer
	if code := mainExit([]string{"--man"}, &page, io.Discard); code != 0 || page.Len() == 0 {
		t.Fatalf("--man: exit %d, %d bytes", code, page.Len())
	}
	man := page.String()
	for _, args := range [][]string{{"--help"}, {"ns", "--help"}} {
		var help bytes.Buffer
		if code := mainExit(args, io.Discard, &help); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		found := helpFlags.FindAllStringSubmatch(help.String(), -1)
		if len(found) < 4 {
			t.Fatalf("%v: found only %d flags in\n%s", args, len(found), help.String())
		}
		for _, m := range found {
			long := `\fB` + roffEscape(m[2]) + `\fR`
			if m[1] != "" {
				long = `\fB` + roffEscape(m[1]) + `\fR, ` + long
			}
			if !strings.Contains(man, ".TP\n"+long) {
				t.Errorf("%v lists %s %s, the man page has no entry %q", args, m[1], m[2], long)
			}
		}
	}
	for _, hidden := range []string{"limits", "man"} {
		if strings.Contains(man, `\-\-`+hidden+`\fR`) {
			t.Errorf("the man page lists the hidden flag --%s", hidden)
		}
	}
}

// TestManPageRenders: groff formats the page without a warning.
func TestManPageRenders(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		if os.Geteuid() == 0 {
			// make test installs it as root: there, its absence is a failure.
			t.Fatal("groff not installed (apt-get install groff-base; make test installs it as root)")
		}
		t.Skip("groff not installed (apt-get install groff-base); make test installs it as root")
	}
	var page bytes.Buffer
	mainExit([]string{"--man"}, &page, io.Discard)
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = &page
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}
