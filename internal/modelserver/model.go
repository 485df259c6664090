package modelserver

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
)

// Model is a loaded synthetic model: the weights, read into memory of its
// own (or mapped read-only from model.safetensors), and the tokenizer. It is
// safe for concurrent use; Close releases the weights, after which no
// Sequence of it may run.
type Model struct {
	info    Info
	stats   LoadStats
	vocab   *vocab
	hidden  int
	file    []byte // the whole weights file, header included
	release func() error
	embed   []float32   // [vocab][hidden]
	layers  [][]float32 // each [hidden][hidden], row-major
	head    []float32   // [hidden][vocab]

	closeOnce sync.Once
	closeErr  error
}

// checkAgainstConfig checks that the weights file holds exactly the tensors
// a model of cfg's shape has, written by Init with cfg's seed.
func checkAgainstConfig(h header, cfg modelConfig, size int64) error {
	if size != cfg.WeightsSize {
		return fmt.Errorf("file is %d bytes, config.json says weights_size %d", size, cfg.WeightsSize)
	}
	md := h.Metadata
	if md["infera.synthetic"] != "true" {
		return fmt.Errorf("__metadata__ lacks \"infera.synthetic\": \"true\": not written by infera")
	}
	if want := strconv.FormatUint(cfg.Seed, 10); md["infera.seed"] != want {
		return fmt.Errorf("__metadata__ says seed %q, config.json says %s: files from different models", md["infera.seed"], want)
	}
	want := layout(shapeOf(cfg))
	have := make(map[string]tensorEntry, len(h.Tensors))
	for _, t := range h.Tensors {
		have[t.Name] = t
	}
	for _, w := range want {
		t, ok := have[w.Name]
		switch {
		case !ok:
			return fmt.Errorf("missing tensor %q", w.Name)
		case t.DType != w.DType:
			return fmt.Errorf("tensor %q has dtype %s, want %s", w.Name, t.DType, w.DType)
		case fmt.Sprint(t.Shape) != fmt.Sprint(w.Shape):
			return fmt.Errorf("tensor %q has shape %v, config.json implies %v", w.Name, t.Shape, w.Shape)
		}
		delete(have, w.Name)
	}
	for name := range have {
		return fmt.Errorf("unexpected tensor %q", name)
	}
	for i, t := range h.Tensors {
		if t.Name != want[i].Name {
			return fmt.Errorf("tensor %q is at data offset %d, where %q belongs", t.Name, t.Begin, want[i].Name)
		}
	}
	return nil
}

// tensors returns the weights in file order, as m.info.Tensors lists them.
func (m *Model) tensors() [][]float32 {
	return slices.Concat([][]float32{m.embed}, m.layers, [][]float32{m.head})
}

// scan feeds the weights file front to back to sum, turning a fault on a
// mapping into an error as fill does.
func (m *Model) scan(ctx context.Context, sum func([]byte)) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: fault reading the mapped file (changed on disk?): %v", ErrInvalidModel, m.info.Weights, r)
		}
	}()
	const chunk = 16 << 20
	for off := 0; off < len(m.file); off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		sum(m.file[off:min(off+chunk, len(m.file))])
	}
	return nil
}

// Verify hashes the weights file and compares the sum with config.json's.
func (m *Model) Verify() error { return m.verify(context.Background()) }

func (m *Model) verify(ctx context.Context) error {
	h := sha256.New()
	if err := m.scan(ctx, func(b []byte) { h.Write(b) }); err != nil {
		return fmt.Errorf("modelserver: verify %s: %w", m.info.Weights, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.info.SHA256 {
		return fmt.Errorf("modelserver: verify %s: sha256 is %s, config.json says %s: %w", m.info.Weights, got, m.info.SHA256, ErrChecksum)
	}
	return nil
}

// Info describes the model.
func (m *Model) Info() Info { return m.info }

// LoadStats says how the model was loaded and what it took.
func (m *Model) LoadStats() LoadStats { return m.stats }

// Close releases the weights' memory (or mapping).
func (m *Model) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.release() })
	return m.closeErr
}

// Prompt is a tokenized prompt.
type Prompt struct {
	IDs  []int
	hash uint64 // of the prompt as given, so different texts differ even as <unk>s
}

// Encode tokenizes text, with <s> first.
func (m *Model) Encode(text string) Prompt {
	h := fnv.New64a()
	h.Write([]byte(text))
	return Prompt{IDs: m.vocab.tokenize([]int{bosID}, text), hash: h.Sum64()}
}

// EncodeIDs makes a prompt of token ids, checking each is in the vocabulary.
func (m *Model) EncodeIDs(ids []int) (Prompt, error) {
	if len(ids) == 0 {
		return Prompt{}, fmt.Errorf("empty prompt")
	}
	h := fnv.New64a()
	var b [8]byte
	for _, id := range ids {
		if id < 0 || id >= len(m.vocab.words) {
			return Prompt{}, fmt.Errorf("token id %d is outside the vocabulary [0, %d)", id, len(m.vocab.words))
		}
		binary.LittleEndian.PutUint64(b[:], uint64(id))
		h.Write(b[:])
	}
	return Prompt{IDs: ids, hash: h.Sum64()}, nil
}

// Decode returns the text of generated token ids.
func (m *Model) Decode(ids []int) string {
	var s []byte
	prev := -1
	for _, id := range ids {
		if id >= 0 && id < len(m.vocab.words) {
			s = append(s, m.vocab.piece(prev, id)...)
			prev = id
		}
	}
	return string(s)
}

// Sequence generates text for one prompt, a token per call to Next. It is
// not safe for concurrent use; many Sequences of one Model may run at once.
type Sequence struct {
	m         *Model
	x, y      []float32 // hidden state, scratch
	logits    []float32
	bias      []float32 // derived from the prompt's hash
	noise     rng       // seeded by the prompt's hash: Gumbel noise per token
	recent    [8]int    // last tokens, penalised against repetition
	prev      int
	sinceStop int
}

// NewSequence starts generating after p. It runs the prompt through the
// layers once, as prefill.
func (m *Model) NewSequence(p Prompt) *Sequence {
	d, v := m.hidden, len(m.vocab.words)
	s := &Sequence{
		m:      m,
		x:      make([]float32, d),
		y:      make([]float32, d),
		logits: make([]float32, v),
		bias:   make([]float32, v),
		prev:   -1,
	}
	for i := range s.recent {
		s.recent[i] = -1
	}
	r := rng(p.hash)
	s.noise = rng(mix(p.hash, 0x6e6f697365))
	for i := range s.bias {
		s.bias[i] = uniform(uint32(r.next()), 0.75) + 0.75
	}
	// The prompt's embedding: a decaying sum, the last token weighing most.
	w := float32(1)
	for i := len(p.IDs) - 1; i >= 0; i-- {
		e := m.embed[p.IDs[i]*d : (p.IDs[i]+1)*d]
		for j := range s.x {
			s.x[j] += float32(w * e[j])
		}
		w *= 0.8
	}
	rmsNorm(s.x)
	m.forward(s.x, s.y)
	return s
}

// Next generates one token: the output projection of the hidden state picks
// it, then its embedding runs through every layer. That reads every weight
// once, as a decoding step of a real model does.
func (s *Sequence) Next() (id int, piece string) {
	m := s.m
	m.project(s.logits, s.x)
	tok := s.pick()
	e := m.embed[tok*m.hidden : (tok+1)*m.hidden]
	for j := range s.x {
		s.x[j] = float32(0.5*s.x[j]) + e[j]
	}
	rmsNorm(s.x)
	m.forward(s.x, s.y)

	piece = m.vocab.piece(s.prev, tok)
	s.prev = tok
	copy(s.recent[1:], s.recent[:])
	s.recent[0] = tok
	if m.vocab.endSent[tok] {
		s.sinceStop = 0
	} else {
		s.sinceStop++
	}
	return tok, piece
}

// pick is argmax over the logits plus the prompt's bias plus Gumbel noise
// (which makes it sampling at temperature 1, with the prompt as the seed,
// so the same prompt gives the same text and the text does not settle into
// a loop), never a special
// token, not punctuation twice in a row nor first, not a recent token, and
// a full stop ever more likely as a sentence grows.
func (s *Sequence) pick() int {
	voc := s.m.vocab
	best, bestScore := len(specialTokens), float32(math.Inf(-1))
	for v := len(specialTokens); v < len(s.logits); v++ {
		score := s.logits[v] + s.bias[v] + gumbel(uint32(s.noise.next()))
		if voc.punct[v] {
			if s.prev < 0 || voc.punct[s.prev] {
				continue
			}
			score -= 1.5
			if voc.endSent[v] {
				score += float32(0.2 * float32(s.sinceStop))
			}
		}
		for _, r := range s.recent {
			if r == v {
				score -= 4
			}
		}
		if score > bestScore {
			best, bestScore = v, score
		}
	}
	return best
}

// gumbel maps 32 random bits to a standard Gumbel variate.
func gumbel(bits uint32) float32 {
	u := (float64(bits) + 0.5) / (1 << 32) // in (0, 1)
	return float32(-math.Log(-math.Log(u)))
}

// forward runs x through every layer: x = rmsnorm(x + leaky(W x)). The
// rows of a large layer are split among the CPUs, as a CPU inference
// engine's threads split them; each row's sum is the same whoever computes
// it, so the result does not depend on how many CPUs there are.
func (m *Model) forward(x, y []float32) {
	d := m.hidden
	for _, w := range m.layers {
		split(d, len(w)*4, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				y[j] = dot(w[j*d:(j+1)*d], x)
			}
		})
		for j, h := range y {
			if h < 0 {
				h *= 0.1
			}
			x[j] += h
		}
		rmsNorm(x)
	}
}

// project computes logits = x · head, streaming through head's rows, its
// columns split among the CPUs.
func (m *Model) project(logits, x []float32) {
	v := len(logits)
	split(v, len(m.head)*4, func(lo, hi int) {
		out := logits[lo:hi]
		clear(out)
		for i, xi := range x {
			row := m.head[i*v+lo : i*v+hi]
			out := out[:len(row)]
			for j, w := range row {
				out[j] += float32(xi * w) // the conversion forbids fused multiply-add: the same result on every platform
			}
		}
	})
}

// minSplitBytes is the least weight data worth a goroutine of its own.
const minSplitBytes = 1 << 20

// split calls f on contiguous ranges covering [0, n), concurrently when the
// work reads enough bytes to pay for it: at most one range per CPU and
// minSplitBytes. It returns when every call has.
func split(n, bytes int, f func(lo, hi int)) {
	parts := min(runtime.GOMAXPROCS(0), bytes/minSplitBytes, n)
	if parts <= 1 {
		f(0, n)
		return
	}
	step := (n + parts - 1) / parts
	var wg sync.WaitGroup
	for lo := step; lo < n; lo += step {
		wg.Go(func() { f(lo, min(lo+step, n)) })
	}
	f(0, step)
	wg.Wait()
}

// dot is the inner product, in four lanes to keep the FPU busy.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float32(a[i] * b[i])
		s1 += float32(a[i+1] * b[i+1])
		s2 += float32(a[i+2] * b[i+2])
		s3 += float32(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float32(a[i] * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

func rmsNorm(x []float32) {
	var ss float32
	for _, v := range x {
		ss += float32(v * v)
	}
	scale := float32(1 / math.Sqrt(float64(ss)/float64(len(x))+1e-6))
	for i := range x {
		x[i] *= scale
	}
}
