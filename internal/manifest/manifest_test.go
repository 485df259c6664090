package manifest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

func TestResolvePath(t *testing.T) {
	doc := `metadata:
  annotations:
    autoscaling.knative.dev/window: 5s
spec:
  containers:
    - image: a
      ports:
        - containerPort: 80
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	root := n.Content[0]
	for _, tc := range []struct {
		path, rendered string
		line, col      int
	}{
		{"metadata.annotations.autoscaling.knative.dev/window", "metadata.annotations[autoscaling.knative.dev/window]", 3, 5},
		{"metadata.annotations[autoscaling.knative.dev/window]", "metadata.annotations[autoscaling.knative.dev/window]", 3, 5},
		{"metadata.annotations.[autoscaling.knative.dev/window]", "metadata.annotations[autoscaling.knative.dev/window]", 3, 5},
		{"spec.containers[0].image", "spec.containers[0].image", 6, 7},
		{"spec.containers[0].ports[0].containerPort", "spec.containers[0].ports[0].containerPort", 8, 11},
		{"spec.containers[0].name", "spec.containers[0].name", 6, 7},   // absent: the element
		{"spec.containers[3].image", "spec.containers[3].image", 5, 3}, // no such element: the list
		{"", "", 1, 1},
	} {
		rendered, at := resolvePath(root, tc.path)
		if rendered != tc.rendered || at.Line != tc.line || at.Column != tc.col {
			t.Errorf("resolvePath(%q) = %q at %d:%d, want %q at %d:%d", tc.path, rendered, at.Line, at.Column, tc.rendered, tc.line, tc.col)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"containers", "containerConcurrency", "timeoutSeconds", "volumes"}
	for _, tc := range []struct{ in, want string }{
		{"contianers", "containers"},
		{"Volumes", "volumes"},
		{"timeoutSecond", "timeoutSeconds"},
		{"zzzzzz", ""},
	} {
		if got := nearest(tc.in, names); got != tc.want {
			t.Errorf("nearest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func load(t *testing.T, doc string) *Set {
	t.Helper()
	return Load(context.Background(), []Source{{Name: "in.yaml", Data: []byte(doc)}}, Options{})
}

func TestLenientAnnotationValues(t *testing.T) {
	set := load(t, `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: s
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: 1
        autoscaling.knative.dev/min-scale: 2
    spec:
      containers:
        - image: example.com/llm:v1
`)
	if err := set.Problems.Err(); err != nil {
		t.Fatal(err)
	}
	var warned []string
	for _, w := range set.Problems.Warnings() {
		if strings.Contains(w.Message, "is not a string") {
			warned = append(warned, w.Pos.String()+" "+w.Path)
		}
	}
	want := []string{
		"in.yaml:9:41 spec.template.metadata.annotations[autoscaling.knative.dev/target]",
		"in.yaml:10:44 spec.template.metadata.annotations[autoscaling.knative.dev/min-scale]",
	}
	if strings.Join(warned, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warned, "\n"), strings.Join(want, "\n"))
	}
	svc := set.Documents[0].Object.(*servingv1.Service)
	if got := svc.Spec.Template.Annotations["autoscaling.knative.dev/target"]; got != "1" {
		t.Errorf("target annotation = %q, want \"1\"", got)
	}
}

func TestMergeKeysOverride(t *testing.T) {
	set := load(t, `apiVersion: v1
kind: ConfigMap
metadata:
  name: c
data:
  <<: {a: "from-merge", b: "merged"}
  a: "explicit"
`)
	if err := set.Problems.Err(); err != nil {
		t.Fatal(err)
	}
	cm := set.Documents[0].Object.(*corev1.ConfigMap)
	if cm.Data["a"] != "explicit" || cm.Data["b"] != "merged" {
		t.Errorf("data = %v, want a=explicit b=merged", cm.Data)
	}
}

func TestSecretKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    *corev1.Secret
		want []string
	}{
		{"empty", &corev1.Secret{}, nil},
		{"data", &corev1.Secret{Data: map[string][]byte{"b": nil, "a": nil}}, []string{"a", "b"}},
		{
			"data and stringData, sorted, each once",
			&corev1.Secret{Data: map[string][]byte{"c": nil, "a": nil}, StringData: map[string]string{"b": "", "a": ""}},
			[]string{"a", "b", "c"},
		},
	} {
		if got := SecretKeys(tc.s); !slices.Equal(got, tc.want) {
			t.Errorf("%s: SecretKeys = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSecretValuesNeverInMessages(t *testing.T) {
	set := load(t, `apiVersion: v1
kind: Secret
metadata:
  name: s
stringData:
  token: 123456789
  list: [sekrit]
`)
	out := render(set.Problems)
	for _, leak := range []string{"123456789", "sekrit"} {
		if strings.Contains(out, leak) {
			t.Errorf("a secret value reached a message:\n%s", out)
		}
	}
	var buf bytes.Buffer
	ok := load(t, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  token: hunter2\ndata:\n  k: aHVudGVyMg==\n")
	if err := Print(&buf, ok.Documents, "yaml"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "hunter2") || strings.Contains(buf.String(), "aHVudGVyMg==") {
		t.Errorf("printed secret is not redacted:\n%s", buf.String())
	}
}

// endless is a reader that never ends, like a 64 MiB (or infinite) input.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func TestHugeInputRefused(t *testing.T) {
	start := time.Now()
	_, err := ReadSources([]string{"-"}, io.LimitReader(endless{}, 64<<20))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "<stdin>") || !strings.Contains(err.Error(), "8 MiB") {
		t.Errorf("error does not name the input and the limit: %v", err)
	}
	t.Logf("refused after %v", time.Since(start))
}

func TestAliasBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 12; i++ {
		b.WriteString("a" + string(rune('0'+i%10)) + string(rune('a'+i)) + ": &a" + string(rune('a'+i)) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			if i == 1 {
				b.WriteString("*a0")
			} else {
				b.WriteString("*a" + string(rune('a'+i-1)))
			}
		}
		b.WriteString("]\n")
	}
	b.WriteString("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.com/llm:v1\n          resources: {limits: {cpu: *am}}\n")
	set := load(t, b.String())
	found := false
	for _, p := range set.Problems.Errors() {
		found = found || strings.Contains(p.Message, "alias bomb")
	}
	if !found {
		t.Fatalf("alias bomb not refused:\n%s", render(set.Problems))
	}
}

// FuzzLoad feeds arbitrary bytes through the whole decoder: it must never panic, and every
// problem it reports must say which input it is about.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n"))
	f.Add([]byte("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  template:\n    spec:\n      containers:\n        - image: example.com/llm:v1\n"))
	f.Add([]byte("a: &a [x]\nb: [*a, *a]\n<<: {c: d}\n"))
	f.Add([]byte("---\n- 1\n---\n\tfoo: bar\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set := Load(context.Background(), []Source{{Name: "fuzz.yaml", Data: data}}, Options{})
		for _, p := range set.Problems {
			if p.Pos.File != "fuzz.yaml" || p.Message == "" {
				t.Fatalf("problem without file or message: %#v", p)
			}
		}
	})
}
