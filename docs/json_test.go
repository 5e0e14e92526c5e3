// SPDX-License-Identifier: Apache-2.0

// Package docs_test keeps the pages under docs/ true: the JSON page lists
// exactly the keys the feed's writer emits, and every relative link
// resolves.
package docs_test

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/output"
)

// fill sets every exported field that v reaches to a value the writer
// cannot mistake for "absent": numbers non-zero, flags true, byte
// strings invalid UTF-8 (so the *_b64 keys appear), one element in each
// slice, every pointer to a filled value. A field added to event.Event
// later is filled too, so a key it brings shows up here.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.String:
		v.SetString("x")
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte{'x', 0xff})
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem())
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	}
}

// events returns events of every kind the feed writes, every optional
// field set, in the variants that switch keys on and off: a result that
// failed, succeeded with 0 or with a positive value; request or flag
// bits none or all; every reason a loss has.
func events() []*event.Event {
	var out []*event.Event
	for k := event.Kind(1); k < event.KindCount; k++ {
		if k.OnlySelects() {
			continue // core and nonzeroexit select exits
		}
		for _, ret := range []int64{-2, 0, 4242} {
			for _, flags := range []uint64{0, 1 << 30, ^uint64(0)} {
				for r := event.LostReason(0); r < event.LostReasons; r++ {
					e := &event.Event{}
					fill(reflect.ValueOf(e).Elem())
					e.Kind, e.Ret, e.FlagsRaw, e.Reason = k, ret, flags, r
					out = append(out, e)
					if k != event.Lost {
						break
					}
				}
			}
		}
	}
	return out
}

// walk records the path of every key in v: "a.b" for a nested object's
// key, "a[].b" for a key of objects in an array.
func walk(v any, path string, keys map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			keys[p] = true
			walk(x, p, keys)
		}
	case []any:
		for _, x := range v {
			walk(x, path+"[]", keys)
		}
	}
}

// writtenKeys are the keys the JSON writer emits for some event.
func writtenKeys(t *testing.T) map[string]bool {
	keys := map[string]bool{}
	for _, e := range events() {
		line := output.AppendJSON(nil, e)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s event is not JSON: %v\n%s", e.Kind, err, line)
		}
		walk(m, "", keys)
	}
	return keys
}

var backticked = regexp.MustCompile("`([^`]+)`")

// documentedKeys are the keys in the first column of the table under
// "## Keys of the feed" in json.md.
func documentedKeys(t *testing.T, page string) map[string]bool {
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Keys of the feed\n")
	if !ok {
		t.Fatalf("%s has no \"## Keys of the feed\" section", page)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	keys := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			keys[m[1]] = true
		}
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no keys found in the table under \"## Keys of the feed\"", page)
	}
	return keys
}

func missingFrom(want, have map[string]bool) []string {
	var out []string
	for k := range want {
		if !have[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestJSONPageListsEveryKey: every key the writer can emit is in
// json.md's table, and every key there is still written.
func TestJSONPageListsEveryKey(t *testing.T) {
	written := writtenKeys(t)
	documented := documentedKeys(t, "json.md")
	if m := missingFrom(written, documented); len(m) > 0 {
		t.Errorf("the JSON writer emits keys docs/json.md does not document (add a row to its \"Keys of the feed\" table): %s", strings.Join(m, ", "))
	}
	if m := missingFrom(documented, written); len(m) > 0 {
		t.Errorf("docs/json.md documents keys the JSON writer no longer emits (remove them, or fix the writer): %s", strings.Join(m, ", "))
	}
}
