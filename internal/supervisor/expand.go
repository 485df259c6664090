package supervisor

import (
	"strconv"
	"strings"
)

// expand replaces $(NAME) in s with vars[NAME], as Kubernetes expands a container's command and
// args from its environment: $$ is a literal $, and a reference to an undefined name (or an
// unclosed one) stays as written.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// expandArgs expands command and args against the container's environment: its env list and
// the variables of Knative's runtime contract.
func (r *replica) expandArgs(argv []string) []string {
	vars := map[string]string{
		"PORT":            strconv.Itoa(r.port),
		"K_SERVICE":       r.rev.Service,
		"K_CONFIGURATION": r.rev.Configuration,
		"K_REVISION":      r.rev.Name,
	}
	for _, e := range r.rev.Container.Env {
		if _, contract := vars[e.Name]; !contract {
			vars[e.Name] = e.Value
		}
	}
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = expand(a, vars)
	}
	return out
}
