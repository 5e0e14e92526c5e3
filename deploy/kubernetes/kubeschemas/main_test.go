// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestSchemas(t *testing.T) {
	spec := `{"definitions": {
	  "io.k8s.api.apps.v1.DaemonSet": {"type": "object",
	    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "DaemonSet", "version": "v1"}],
	    "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DaemonSetSpec", "description": "the spec"},
	                   "port": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
	                   "props": {"$ref": "#/definitions/Props"}}},
	  "io.k8s.api.apps.v1.DaemonSetSpec": {"type": "object", "properties": {"minReadySeconds": {"type": "integer"}}},
	  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
	  "Props": {"type": "object", "properties": {"not": {"$ref": "#/definitions/Props"}}},
	  "io.k8s.api.core.v1.ServiceAccount": {"type": "object", "properties": {},
	    "x-kubernetes-group-version-kind": [{"group": "", "kind": "ServiceAccount", "version": "v1"}]}
	}}`
	dir := t.TempDir()
	in := filepath.Join(dir, "swagger.json")
	if err := os.WriteFile(in, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := run(in, filepath.Join(dir, "out"))
	if err != nil || n != 2 {
		t.Fatalf("run: %d schemas, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "serviceaccount-v1.json")); err != nil {
		t.Error(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "daemonset-apps-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		AdditionalProperties *bool `json:"additionalProperties"`
		Properties           struct {
			Spec struct {
				Description          string          `json:"description"`
				AdditionalProperties *bool           `json:"additionalProperties"`
				Properties           json.RawMessage `json:"properties"`
			} `json:"spec"`
			Port  map[string]any `json:"port"`
			Props struct {
				Properties struct {
					Not map[string]any `json:"not"`
				} `json:"properties"`
			} `json:"props"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	p := s.Properties
	if s.AdditionalProperties == nil || *s.AdditionalProperties || p.Spec.AdditionalProperties == nil || *p.Spec.AdditionalProperties {
		t.Errorf("objects are not strict: %s", b)
	}
	var props bytes.Buffer
	_ = json.Compact(&props, p.Spec.Properties)
	if p.Spec.Description != "the spec" || props.String() != `{"minReadySeconds":{"type":"integer"}}` {
		t.Errorf("reference not inlined: %s", b)
	}
	if _, ok := p.Port["oneOf"]; !ok {
		t.Errorf("int-or-string: %v", p.Port)
	}
	if len(p.Props.Properties.Not) != 0 {
		t.Errorf("a recursive type recurs: %v", p.Props.Properties.Not)
	}
}
