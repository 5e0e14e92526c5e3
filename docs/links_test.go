// SPDX-License-Identifier: Apache-2.0

package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// pages are the Markdown files whose relative links must resolve.
func pages(t *testing.T) []string {
	docs, err := filepath.Glob("*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	return append([]string{"../README.md", "../deploy/kubernetes/README.md"}, docs...)
}

// prose returns the lines of a Markdown file with fenced code blocks and
// inline code blanked (so line i is the file's line i+1), and the
// headings among them.
func prose(text string) (lines, headings []string) {
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			lines = append(lines, "")
			continue
		}
		if fenced {
			lines = append(lines, "")
			continue
		}
		if strings.HasPrefix(line, "#") {
			headings = append(headings, strings.TrimSpace(strings.TrimLeft(line, "#")))
		}
		lines = append(lines, inlineCode.ReplaceAllString(line, "``"))
	}
	return lines, headings
}

var (
	inlineCode = regexp.MustCompile("`[^`]*`")
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
)

// anchors are the fragment ids GitHub gives a page's headings: lower
// case, punctuation but '-' and '_' dropped, spaces to '-', a repeated
// one numbered.
func anchors(headings []string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, h := range headings {
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		id := b.String()
		if n := seen[id]; n > 0 {
			out[id+"-"+strconv.Itoa(n)] = true
		} else {
			out[id] = true
		}
		seen[id]++
	}
	return out
}

// TestRelativeLinksResolve: every relative link in the README and the
// docs names a file that exists and, with #anchor, a heading in it.
func TestRelativeLinksResolve(t *testing.T) {
	headings := map[string]map[string]bool{}
	headingsOf := func(path string) (map[string]bool, error) {
		if h, ok := headings[path]; ok {
			return h, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		_, hs := prose(string(b))
		headings[path] = anchors(hs)
		return headings[path], nil
	}
	checked := 0
	for _, page := range pages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		lines, _ := prose(string(b))
		for i, line := range lines {
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				file, anchor, _ := strings.Cut(target, "#")
				path := page
				if file != "" {
					path = filepath.Join(filepath.Dir(page), file)
				}
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s:%d: link %q: no file %s", page, i+1, target, path)
					continue
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(path, ".md") {
					t.Errorf("%s:%d: link %q: an anchor in a file that is not Markdown", page, i+1, target)
					continue
				}
				ids, err := headingsOf(path)
				if err != nil {
					t.Fatal(err)
				}
				if !ids[anchor] {
					t.Errorf("%s:%d: link %q: %s has no heading #%s", page, i+1, target, path, anchor)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links found: the link parser is broken")
	}
}

func TestAnchors(t *testing.T) {
	ids := anchors([]string{"`--container REF`", "`nstrace ns`: whose namespace is that?", "Walkthrough: Docker", "A b", "A b", "`--host`, `--no-host`"})
	for _, want := range []string{"--container-ref", "nstrace-ns-whose-namespace-is-that", "walkthrough-docker", "a-b", "a-b-1", "--host---no-host"} {
		if !ids[want] {
			t.Errorf("no anchor %q in %v", want, ids)
		}
	}
}
