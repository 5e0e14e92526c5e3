// SPDX-License-Identifier: Apache-2.0

// Command kubeschemas turns Kubernetes' OpenAPI v2 document (swagger.json,
// shipped in the k8s.io/kubernetes Go module) into the standalone, strict
// JSON schemas kubeconform reads, one file per kind: kubeconform validates
// the manifests offline, without its schemas' download.
//
//	kubeschemas -spec swagger.json -out DIR
//	kubeconform -schema-location 'DIR/{{.ResourceKind}}{{.KindSuffix}}.json' ...
//
// Like kubeconform's openapi2jsonschema: references are inlined, objects
// take no properties they do not declare (strict), int-or-string is
// either.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

type schema = map[string]any

func main() {
	spec := flag.String("spec", "", "Kubernetes' swagger.json")
	out := flag.String("out", "", "directory for the schemas")
	flag.Parse()
	if *spec == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: kubeschemas -spec swagger.json -out DIR")
		os.Exit(2)
	}
	n, err := run(*spec, *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeschemas: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("kubeschemas: %d schemas in %s\n", n, *out)
}

func run(spec, out string) (int, error) {
	b, err := os.ReadFile(spec)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]schema `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("reading %s: %w", spec, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, err
	}
	n := 0
	for name, def := range doc.Definitions {
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) == 0 {
			continue
		}
		s, err := expand(doc.Definitions, def, map[string]bool{name: true})
		if err != nil {
			return n, fmt.Errorf("%s: %w", name, err)
		}
		body, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return n, err
		}
		for _, g := range gvks {
			gvk := g.(map[string]any)
			group, version, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)
			// kubeconform's KindSuffix: the group's first label, then the version.
			file := strings.ToLower(kind)
			if group != "" {
				file += "-" + strings.ToLower(strings.Split(group, ".")[0])
			}
			file += "-" + strings.ToLower(version) + ".json"
			if err := os.WriteFile(filepath.Join(out, file), body, 0o644); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// expand inlines every reference; a type that contains itself (only
// JSONSchemaProps does) becomes "anything" where it recurs.
func expand(defs map[string]schema, v any, seen map[string]bool) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			def, ok := defs[name]
			if !ok {
				return nil, fmt.Errorf("unknown reference %s", ref)
			}
			if seen[name] {
				return schema{}, nil
			}
			seen[name] = true
			defer delete(seen, name)
			out, err := expand(defs, def, seen)
			if err != nil {
				return nil, err
			}
			// Keep the description of the referring property.
			if d, ok := v["description"]; ok {
				if m, ok := out.(schema); ok {
					m = copyMap(m)
					m["description"] = d
					out = m
				}
			}
			return out, nil
		}
		if v["format"] == "int-or-string" {
			return schema{"oneOf": []any{schema{"type": "string"}, schema{"type": "integer"}}}, nil
		}
		out := make(schema, len(v)+1)
		for k, x := range v {
			if k == "x-kubernetes-group-version-kind" {
				out[k] = x
				continue
			}
			e, err := expand(defs, x, seen)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		if _, ok := v["properties"]; ok {
			if _, set := v["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			e, err := expand(defs, x, seen)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	return v, nil
}

func copyMap(m schema) schema {
	out := make(schema, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
