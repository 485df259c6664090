package modelserver

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// Files of a model directory.
const (
	WeightsFile   = "model.safetensors"
	ConfigFile    = "config.json"
	TokenizerFile = "tokenizer.json"
)

// Defaults of InitOptions.
const (
	DefaultSize = 256 << 20
	DefaultName = "infera-synthetic"
	// MinSize is the smallest InitOptions.Size accepted.
	MinSize = 512 << 10
)

const (
	initVocab  = 512   // tokens in the vocabulary Init writes
	maxContext = 4096  // max_position_embeddings in config.json
	maxHidden  = 16384 // largest hidden size Init picks
)

// SyntheticNote is the plain statement, in Info.Note, of what the weights are.
const SyntheticNote = "synthetic weights: deterministic pseudo-random numbers from the seed, not a trained model. " +
	"Every token does a real pass over all of them, so latency and memory behave like a real model of this size, " +
	"but the text is word salad."

// InitOptions says what Init writes.
type InitOptions struct {
	Size int64  // approximate bytes of weights; DefaultSize if 0, at least MinSize
	Seed uint64 // the same seed and size give byte-identical files
	Name string // the served model name; DefaultName if empty
}

// Info describes a model directory.
type Info struct {
	Dir     string
	Name    string
	Weights string // path of model.safetensors
	Size    int64  // bytes of model.safetensors
	SHA256  string // of model.safetensors, hex
	DType   string
	Hidden  int
	Layers  int
	Vocab   int
	Seed    uint64
	Tensors []TensorInfo
	Note    string // SyntheticNote
}

// TensorInfo describes one tensor of the weights file.
type TensorInfo struct {
	Name  string
	DType string
	Shape []int64
	Bytes int64
}

// String formats i for a terminal, one fact a line.
func (i Info) String() string {
	s := fmt.Sprintf("model    %s\npath     %s\nsize     %s (%d bytes)\nsha256   %s\nshape    hidden %d, layers %d, vocab %d, %s, seed %d\ntensors  %d\n",
		i.Name, i.Weights, humanBytes(i.Size), i.Size, i.SHA256, i.Hidden, i.Layers, i.Vocab, i.DType, i.Seed, len(i.Tensors))
	for _, t := range i.Tensors {
		s += fmt.Sprintf("  %-28s %s %v %s\n", t.Name, t.DType, t.Shape, humanBytes(t.Bytes))
	}
	return s + "note     " + i.Note + "\n"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// modelConfig is config.json, shaped like a Hugging Face config.
type modelConfig struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	Name                  string   `json:"name"`
	HiddenSize            int      `json:"hidden_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	VocabSize             int      `json:"vocab_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	TorchDType            string   `json:"torch_dtype"`
	Synthetic             bool     `json:"synthetic"`
	Seed                  uint64   `json:"seed"`
	WeightsFile           string   `json:"weights_file"`
	WeightsSize           int64    `json:"weights_size"`
	WeightsSHA256         string   `json:"weights_sha256"`
}

const (
	architecture = "InferaSyntheticLM"
	modelType    = "infera-synthetic"
)

// shape is a model's dimensions.
type shape struct{ hidden, layers, vocab int }

func (s shape) dataBytes() int64 {
	d, v := int64(s.hidden), int64(s.vocab)
	return 4 * (2*v*d + int64(s.layers)*d*d)
}

// chooseShape picks the hidden size (a multiple of 64) and layer count whose
// weights come to size: within 1% if it can, and then the one with
// layers nearest 16 (like a small LLM), the larger hidden size on a tie;
// failing that, the nearest.
func chooseShape(size int64) shape {
	var best shape
	bestOff, bestFit := int64(math.MaxInt64), false
	for d := 64; d <= maxHidden; d += 64 {
		s := shape{hidden: d, vocab: initVocab}
		fixed := s.dataBytes()
		per := 4 * int64(d) * int64(d)
		if size < fixed+per {
			break
		}
		s.layers = int(max(1, (size-fixed+per/2)/per))
		off := s.dataBytes() - size
		off = max(off, -off)
		fit := off*100 <= size
		switch {
		case fit && !bestFit,
			fit && abs(s.layers-16) <= abs(best.layers-16),
			!fit && !bestFit && off <= bestOff:
			best, bestOff, bestFit = s, off, fit
		}
	}
	return best
}

func abs(n int) int { return max(n, -n) }

// layout returns the tensors of a model of shape s, in data order.
func layout(s shape) []tensorEntry {
	d, v := int64(s.hidden), int64(s.vocab)
	var ts []tensorEntry
	var at int64
	add := func(name string, shape ...int64) {
		n := 4 * shape[0] * shape[1]
		ts = append(ts, tensorEntry{Name: name, DType: "F32", Shape: shape, Begin: at, End: at + n})
		at += n
	}
	add("model.embed_tokens.weight", v, d)
	for l := range s.layers {
		add("model.layers."+strconv.Itoa(l)+".weight", d, d)
	}
	add("lm_head.weight", d, v)
	return ts
}

func safetensorsMetadata(seed uint64) map[string]string {
	return map[string]string{"format": "pt", "infera.synthetic": "true", "infera.seed": strconv.FormatUint(seed, 10)}
}

// Init writes a synthetic model to dir, creating dir if needed and replacing
// a model already there. The result depends only on opts. Files are written
// under temporary names and renamed into place, config.json last, and an old
// config.json is removed first, so an interrupted Init never leaves a
// directory that loads.
func Init(dir string, opts InitOptions) (Info, error) {
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Size < MinSize {
		return Info{}, fmt.Errorf("modelserver: init %s: size %d is below the minimum of %d bytes", dir, opts.Size, MinSize)
	}
	cfg, err := initFiles(dir, opts)
	if err != nil {
		return Info{}, fmt.Errorf("modelserver: init %s: %w", dir, err)
	}
	return newInfo(dir, cfg, layout(shapeOf(cfg))), nil
}

func initFiles(dir string, opts InitOptions) (modelConfig, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return modelConfig{}, err
	}
	// Temporary files of an Init that crashed.
	stale, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, p := range stale {
		_ = os.Remove(p)
	}

	s := chooseShape(opts.Size)
	tensors := layout(s)
	hdr, err := encodeHeader(safetensorsMetadata(opts.Seed), tensors)
	if err != nil {
		return modelConfig{}, err
	}
	var size int64
	h := sha256.New()
	weights, err := writeTemp(dir, WeightsFile, func(w io.Writer) error {
		cw := &countWriter{w: io.MultiWriter(w, h)}
		if _, err := cw.Write(hdr); err != nil {
			return err
		}
		if err := writeWeights(cw, opts.Seed, s, tensors); err != nil {
			return err
		}
		size = cw.n
		return nil
	})
	if err != nil {
		return modelConfig{}, err
	}
	defer os.Remove(weights) // a no-op once renamed

	words := buildVocab(s.vocab)
	tok, err := writeTemp(dir, TokenizerFile, func(w io.Writer) error { return writeTokenizer(w, words) })
	if err != nil {
		return modelConfig{}, err
	}
	defer os.Remove(tok)

	cfg := modelConfig{
		Architectures:         []string{architecture},
		ModelType:             modelType,
		Name:                  opts.Name,
		HiddenSize:            s.hidden,
		NumHiddenLayers:       s.layers,
		VocabSize:             s.vocab,
		MaxPositionEmbeddings: maxContext,
		TorchDType:            "float32",
		Synthetic:             true,
		Seed:                  opts.Seed,
		WeightsFile:           WeightsFile,
		WeightsSize:           size,
		WeightsSHA256:         hex.EncodeToString(h.Sum(nil)),
	}
	conf, err := writeTemp(dir, ConfigFile, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(cfg)
	})
	if err != nil {
		return modelConfig{}, err
	}
	defer os.Remove(conf)

	if err := os.Remove(filepath.Join(dir, ConfigFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return modelConfig{}, err
	}
	for _, r := range [][2]string{{weights, WeightsFile}, {tok, TokenizerFile}, {conf, ConfigFile}} {
		if err := os.Rename(r[0], filepath.Join(dir, r[1])); err != nil {
			return modelConfig{}, err
		}
	}
	return cfg, syncDir(dir)
}

// writeTemp writes a file named after name in dir with write, syncs it and
// returns its path.
func writeTemp(dir, name string, write func(io.Writer) error) (path string, err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeWeights writes every tensor's values: uniform in [-a, a], with a = 1
// for the embedding and sqrt(3/hidden) for the matrices, so that their
// products keep unit scale.
func writeWeights(w io.Writer, seed uint64, s shape, tensors []tensorEntry) error {
	buf := make([]byte, 1<<20)
	for i, t := range tensors {
		a := float32(math.Sqrt(3 / float64(s.hidden)))
		if i == 0 {
			a = 1
		}
		r := rng(mix(seed, uint64(i)))
		for left := t.End - t.Begin; left > 0; {
			chunk := buf[:min(left, int64(len(buf)))]
			for j := 0; j < len(chunk); j += 8 {
				x := r.next()
				binary.LittleEndian.PutUint32(chunk[j:], math.Float32bits(uniform(uint32(x), a)))
				binary.LittleEndian.PutUint32(chunk[j+4:], math.Float32bits(uniform(uint32(x>>32), a)))
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			left -= int64(len(chunk))
		}
	}
	return nil
}

// uniform maps 32 random bits to [-a, a).
func uniform(bits uint32, a float32) float32 {
	return (float32(bits>>8)*(1.0/(1<<24))*2 - 1) * a
}

// rng is splitmix64: fast, and the same numbers on every platform.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// mix hashes two words into one.
func mix(a, b uint64) uint64 {
	r := rng(a ^ (b * 0xd1b54a32d192ed03))
	return r.next()
}

func shapeOf(c modelConfig) shape {
	return shape{hidden: c.HiddenSize, layers: c.NumHiddenLayers, vocab: c.VocabSize}
}

func newInfo(dir string, c modelConfig, tensors []tensorEntry) Info {
	i := Info{
		Dir:     dir,
		Name:    c.Name,
		Weights: filepath.Join(dir, WeightsFile),
		Size:    c.WeightsSize,
		SHA256:  c.WeightsSHA256,
		DType:   "F32",
		Hidden:  c.HiddenSize,
		Layers:  c.NumHiddenLayers,
		Vocab:   c.VocabSize,
		Seed:    c.Seed,
		Note:    SyntheticNote,
	}
	for _, t := range tensors {
		i.Tensors = append(i.Tensors, TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Bytes: t.End - t.Begin})
	}
	return i
}

// readConfig reads and checks config.json.
func readConfig(path string) (modelConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return modelConfig{}, fmt.Errorf("%w: %w", ErrInvalidModel, err)
	}
	var c modelConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return modelConfig{}, fmt.Errorf("%w: %s: %w", ErrInvalidModel, path, err)
	}
	var problem string
	switch {
	case c.ModelType != modelType:
		problem = fmt.Sprintf("model_type is %q, want %q", c.ModelType, modelType)
	case !c.Synthetic:
		problem = "synthetic must be true: this server runs only infera's synthetic models"
	case c.TorchDType != "float32":
		problem = fmt.Sprintf("torch_dtype is %q, want float32", c.TorchDType)
	case c.HiddenSize <= 0 || c.HiddenSize > maxHidden:
		problem = fmt.Sprintf("hidden_size %d is out of range 1..%d", c.HiddenSize, maxHidden)
	case c.NumHiddenLayers <= 0 || c.NumHiddenLayers > 1024:
		problem = fmt.Sprintf("num_hidden_layers %d is out of range 1..1024", c.NumHiddenLayers)
	case c.VocabSize <= len(specialTokens) || c.VocabSize > 1<<20:
		problem = fmt.Sprintf("vocab_size %d is out of range %d..%d", c.VocabSize, len(specialTokens)+1, 1<<20)
	case c.WeightsFile != WeightsFile:
		problem = fmt.Sprintf("weights_file is %q, want %q", c.WeightsFile, WeightsFile)
	case c.Name == "":
		problem = "name is empty"
	}
	if problem != "" {
		return modelConfig{}, fmt.Errorf("%w: %s: %s", ErrInvalidModel, path, problem)
	}
	return c, nil
}
