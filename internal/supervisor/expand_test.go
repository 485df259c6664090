package supervisor

import "testing"

func TestExpand(t *testing.T) {
	vars := map[string]string{"PORT": "8080", "MODEL": "/models/llm", "EMPTY": ""}
	for _, tc := range []struct{ in, want string }{
		{"--port=$(PORT)", "--port=8080"},
		{"$(MODEL)/weights", "/models/llm/weights"},
		{"$(PORT)$(PORT)", "80808080"},
		{"$$(PORT)", "$(PORT)"},
		{"$$", "$"},
		{"$(UNDEFINED)", "$(UNDEFINED)"},
		{"$(EMPTY)x", "x"},
		{"$()", "$()"},
		{"$(PORT", "$(PORT"},
		{"cost $5", "cost $5"},
		{"trailing $", "trailing $"},
		{"no refs", "no refs"},
	} {
		if got := expand(tc.in, vars); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
