package kvalidate

import (
	"slices"
	"testing"

	"knative.dev/pkg/apis"
)

func TestEnumAndLines(t *testing.T) {
	type medium string
	if err := Enum(medium("SSD"), "mediumtype", "MEM", "SSD", "HDD"); err != nil {
		t.Errorf("SSD: %v", err)
	}
	if err := Enum(medium(""), "mediumtype", "MEM"); err != nil {
		t.Errorf("empty: %v", err)
	}
	err := Enum(medium("NVME"), "mediumtype", "MEM", "SSD").Also(apis.ErrMissingField(KeyPath("options", "fs.oss.endpoint")))
	want := []string{
		`Error mediumtype: invalid value "NVME": expected one of MEM, SSD`,
		`Error options[fs.oss.endpoint]: missing field(s)`,
	}
	if got := Lines(err); !slices.Equal(got, want) {
		t.Errorf("Lines = %q, want %q", got, want)
	}
}
