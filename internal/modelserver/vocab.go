package modelserver

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The tokenizer is word level, written as a Hugging Face tokenizer.json
// (model WordLevel, Lowercase normalizer, Whitespace pre-tokenizer), so the
// tokenizers library loads it too. Text splits into runs of word characters
// and runs of other non-space characters, each one token, <unk> when it is
// not in the vocabulary.

// Special token ids: the first ones of every vocabulary Init writes.
const (
	unkID = 0 // <unk>
	bosID = 1 // <s>, put before every text prompt
	eosID = 2 // </s>, never generated
)

var specialTokens = []string{"<unk>", "<s>", "</s>"}

var punctTokens = []string{".", ",", "?", "!", ";", ":"}

// wordList supplies the vocabulary's words, most common first; buildVocab
// takes as many as it needs. Only lowercase a-z.
const wordList = `
the of and to a in is it you that he was for on are with as his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long
make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw
far sea draw left late run while press close night real life few north open seem together next white
children begin got walk example ease paper group always music those both mark often letter until mile
river car feet care second book carry took science eat room friend began idea fish mountain stop
once base hear horse cut sure watch color face wood main enough plain girl usual young ready above
ever red list though feel talk bird soon body dog family direct pose leave song measure door product
black short numeral class wind question happen complete ship area half rock order fire south problem
piece told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel less
morning ten simple several vowel toward lay against pattern slow center love person money serve
appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead
cry dark machine note wait plan figure star box noun field rest correct able pound done beauty drive
stood contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full force
blue object decide surface deep moon island foot system busy test record boat common gold possible
plane dry wonder laugh thousand ago ran check game shape miss brought heat snow bring yes distant
fill east paint language among grand ball yet wave drop heart present heavy dance engine position
arm wide sail material size vary settle speak weight general ice matter circle pair include divide
felt perhaps pick sudden count square reason length represent art subject region energy hunt bed
brother egg ride cell believe forest sit race window store summer train sleep prove leg exercise
wall catch wish sky board joy winter sat written wild instrument kept glass grass job edge sign
visit past soft fun bright gas weather month million bear finish happy hope flower strange gone jump
baby eight village meet root buy raise solve metal whether push seven paragraph third shall held hair
describe cook floor either result burn hill safe cat century consider type law bit coast copy phrase
silent tall sand soil roll temperature finger industry value lie beat natural view sense ear else
quite case middle son lake moment scale loud spring observe child straight nation dictionary milk
speed method pay age section dress cloud surprise quiet stone tiny climb cool design poor lot
experiment bottom key iron single stick flat twenty skin smile hole trade melody trip office receive
row mouth exact symbol least trouble shout except wrote seed tone join suggest clean break lady yard
rise blow oil touch grew cent mix team wire cost lost brown wear garden equal sent choose fell fit
flow fair bank collect save control decimal gentle woman captain practice separate difficult doctor
please protect noon whose locate ring character insect caught period indicate radio spoke atom human
history effect electric expect crop modern element student corner party supply bone rail imagine
provide agree thus capital chair fruit rich thick process operate guess necessary sharp wing create
neighbor wash rather crowd corn compare poem string bell depend tube famous dollar stream sight thin
triangle planet hurry chief colony clock tie enter major fresh search send yellow allow print spot
desert suit current lift rose continue block chart hat sell success company event particular deal
swim term opposite shoe shoulder spread arrange camp invent cotton born determine nine truck noise
level chance gather shop stretch throw shine property column molecule select wrong gray repeat require
`

// buildVocab returns the vocabulary Init writes: the special tokens, the
// punctuation, then the first words of wordList, n tokens in all.
func buildVocab(n int) []string {
	v := make([]string, 0, n)
	seen := make(map[string]bool, n)
	for _, w := range slices.Concat(specialTokens, punctTokens, strings.Fields(wordList)) {
		if len(v) == n {
			break
		}
		if !seen[w] {
			seen[w] = true
			v = append(v, w)
		}
	}
	return v
}

// vocab is a loaded tokenizer: ids to words and back, and the text pieces a
// generated token decodes to.
type vocab struct {
	words   []string
	ids     map[string]int
	spaced  []string // " word" (punctuation: ".")
	capital []string // " Word", after the end of a sentence
	punct   []bool   // not a word: attaches without a space
	endSent []bool   // ends a sentence: the next word is capitalised
}

func newVocab(words []string) *vocab {
	v := &vocab{
		words:   words,
		ids:     make(map[string]int, len(words)),
		spaced:  make([]string, len(words)),
		capital: make([]string, len(words)),
		punct:   make([]bool, len(words)),
		endSent: make([]bool, len(words)),
	}
	for id, w := range words {
		v.ids[w] = id
		r, _ := utf8.DecodeRuneInString(w)
		if isWordRune(r) {
			v.spaced[id] = " " + w
			v.capital[id] = " " + string(unicode.ToUpper(r)) + w[utf8.RuneLen(r):]
		} else {
			v.spaced[id], v.capital[id] = w, w
			v.punct[id] = true
			v.endSent[id] = w == "." || w == "?" || w == "!"
		}
	}
	return v
}

// piece returns the text tok decodes to, following prev (-1 at the start).
func (v *vocab) piece(prev, tok int) string {
	if prev < 0 || v.endSent[prev] {
		return v.capital[tok]
	}
	return v.spaced[tok]
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// tokenize appends the ids of text's tokens to ids.
func (v *vocab) tokenize(ids []int, text string) []int {
	text = strings.ToLower(text)
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if unicode.IsSpace(r) {
			i += n
			continue
		}
		word := isWordRune(r)
		j := i + n
		for j < len(text) {
			r, n := utf8.DecodeRuneInString(text[j:])
			if unicode.IsSpace(r) || isWordRune(r) != word {
				break
			}
			j += n
		}
		id, ok := v.ids[text[i:j]]
		if !ok {
			id = unkID
		}
		ids = append(ids, id)
		i = j
	}
	return ids
}

// tokenizerJSON is the subset of Hugging Face's tokenizer.json that a
// WordLevel tokenizer uses.
type tokenizerJSON struct {
	Version       string         `json:"version"`
	Truncation    any            `json:"truncation"`
	Padding       any            `json:"padding"`
	AddedTokens   []addedToken   `json:"added_tokens"`
	Normalizer    *tokenizerPart `json:"normalizer"`
	PreTokenizer  *tokenizerPart `json:"pre_tokenizer"`
	PostProcessor any            `json:"post_processor"`
	Decoder       any            `json:"decoder"`
	Model         struct {
		Type     string         `json:"type"`
		Vocab    map[string]int `json:"vocab"`
		UnkToken string         `json:"unk_token"`
	} `json:"model"`
}

type tokenizerPart struct {
	Type string `json:"type"`
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

func writeTokenizer(w io.Writer, words []string) error {
	var t tokenizerJSON
	t.Version = "1.0"
	for id, s := range words[:len(specialTokens)] {
		t.AddedTokens = append(t.AddedTokens, addedToken{ID: id, Content: s, Special: true})
	}
	t.Normalizer = &tokenizerPart{Type: "Lowercase"}
	t.PreTokenizer = &tokenizerPart{Type: "Whitespace"}
	t.Model.Type = "WordLevel"
	t.Model.UnkToken = specialTokens[unkID]
	t.Model.Vocab = make(map[string]int, len(words))
	for id, s := range words {
		t.Model.Vocab[s] = id
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(t)
}

// readTokenizer reads a WordLevel tokenizer.json whose ids are 0..n-1 and
// whose first tokens are infera's special tokens.
func readTokenizer(path string) (*vocab, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidModel, err)
	}
	var t tokenizerJSON
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidModel, path, err)
	}
	if t.Model.Type != "WordLevel" {
		return nil, fmt.Errorf("%w: %s: model.type is %q, want WordLevel", ErrInvalidModel, path, t.Model.Type)
	}
	words := make([]string, len(t.Model.Vocab))
	for s, id := range t.Model.Vocab {
		if id < 0 || id >= len(words) || words[id] != "" || s == "" {
			return nil, fmt.Errorf("%w: %s: model.vocab must number %d non-empty tokens 0..%d, once each (token %q has id %d)",
				ErrInvalidModel, path, len(words), len(words)-1, s, id)
		}
		words[id] = s
	}
	for id, s := range specialTokens {
		if id >= len(words) || words[id] != s {
			return nil, fmt.Errorf("%w: %s: token %d must be %q", ErrInvalidModel, path, id, s)
		}
	}
	return newVocab(words), nil
}
