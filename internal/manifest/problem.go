package manifest

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Severity tells whether a Problem stops an apply.
type Severity int

const (
	// Error problems make the whole set invalid: nothing of it is applied.
	Error Severity = iota
	// Warning problems are printed and the set is still applied.
	Warning
)

// Position is a place in an input file; Line and Col are 1-based, 0 when unknown.
type Position struct {
	File string
	Line int
	Col  int
}

func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Problem is one finding about the input, with everything a user needs to find it:
// the position, the object ("Service default/sd-backend"), the field path and the message.
type Problem struct {
	Pos      Position
	Object   string
	Path     string
	Message  string
	Severity Severity
}

// String renders the problem as `file:line:col: [warning: ]Kind ns/name: path: message`.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Pos.String())
	b.WriteString(": ")
	if p.Severity == Warning {
		b.WriteString("warning: ")
	}
	if p.Object != "" {
		b.WriteString(p.Object)
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every finding of one load, errors and warnings together.
type Problems []Problem

// ErrInvalid is wrapped by the error of a set that has error-level problems.
var ErrInvalid = errors.New("invalid manifests")

// Errors returns only the error-level problems.
func (ps Problems) Errors() Problems { return ps.filter(Error) }

// Warnings returns only the warning-level problems.
func (ps Problems) Warnings() Problems { return ps.filter(Warning) }

func (ps Problems) filter(s Severity) Problems {
	var out Problems
	for _, p := range ps {
		if p.Severity == s {
			out = append(out, p)
		}
	}
	return out
}

// Err returns nil when there is no error-level problem, else an error wrapping ErrInvalid
// whose text lists every error, one per line.
func (ps Problems) Err() error {
	errs := ps.Errors()
	if len(errs) == 0 {
		return nil
	}
	lines := make([]string, len(errs))
	for i, p := range errs {
		lines[i] = p.String()
	}
	return fmt.Errorf("%w:\n%s", ErrInvalid, strings.Join(lines, "\n"))
}

// Sort orders problems by file, line and column, keeping the order of equal positions.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Pos, ps[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}
