package container

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

func TestAuthFor(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	team := `{"auths":{"reg.example.com/team":{"auth":"` + b64("team:t") + `"},"reg.example.com":{"username":"u","password":"p"}}}`
	hub := `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("hub:h") + `"}}}`
	other := `{"auths":{"other.example.com":{"auth":"` + b64("o:o") + `"}}}`
	tests := []struct {
		name, ref string
		configs   []string
		user      string // "" : no credential
		wantErr   string
	}{
		{"longest prefix wins", "reg.example.com/team/app:v1", []string{team}, "team", ""},
		{"host entry", "reg.example.com/else/app", []string{team}, "u", ""},
		{"docker hub alias", "library/ubuntu", []string{hub}, "hub", ""},
		{"first secret with an entry", "reg.example.com/app", []string{other, team}, "u", ""},
		{"none matches", "quay.io/app", []string{team, other}, "", ""},
		{"bad json", "app", []string{"{"}, "", "pull secret 1"},
		{"bad auth", "reg.example.com/app", []string{`{"auths":{"reg.example.com":{"auth":"!!"}}}`}, "", "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfgs [][]byte
			for _, c := range tt.configs {
				cfgs = append(cfgs, []byte(c))
			}
			a, err := AuthFor(tt.ref, cfgs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (a == nil) != (tt.user == "") || (a != nil && a.Username != tt.user) {
				t.Fatalf("auth = %+v, want user %q", a, tt.user)
			}
		})
	}
}

func TestDigestRef(t *testing.T) {
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	img := Image{ID: "sha256:cfg", RepoDigests: []string{"127.0.0.1:5000/other@" + a, "127.0.0.1:5000/app@" + b}}
	if got := img.DigestRef("127.0.0.1:5000/app:v1"); got != "127.0.0.1:5000/app@"+b {
		t.Errorf("DigestRef = %q", got)
	}
	if got := img.DigestRef("local/app:dev"); got != "sha256:cfg" {
		t.Errorf("DigestRef of a loaded image = %q, want its ID", got)
	}
}

func TestCreateConfigGPUs(t *testing.T) {
	dr := Spec{GPUs: []string{"1"}}.CreateConfig().HostConfig.DeviceRequests
	if len(dr) != 1 || dr[0].Count != 0 || !slices.Equal(dr[0].DeviceIDs, []string{"1"}) || dr[0].Driver != "nvidia" {
		t.Fatalf("device requests %+v: want device 1 only, never a count (all)", dr)
	}
	if len(Spec{}.CreateConfig().HostConfig.DeviceRequests) != 0 {
		t.Fatal("device requests without GPUs")
	}
}
