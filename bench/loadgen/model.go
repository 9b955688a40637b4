package main

// ---- the fake model ------------------------------------------------------------------------
//
// A strict Messages API (POST /v1/messages): it refuses what the real one refuses (no key, no
// anthropic-version, roles out of turn, empty content) and answers with the markers the caller
// said, newest first. Streamed, it writes its reply as the real API does: server-sent events,
// chunked on a kept-alive connection, a word a delta, the first sentence after the latency and
// each further one a sentence gap later.

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"regexp"
	"strings"
	"time"
)

var marker = regexp.MustCompile(`\bmk[0-9A-Za-z]+\b`)

// What the model says after its echo when asked for longer replies: no markers in them.
var furtherSentences = []string{"I have noted that.", "Is there anything else I can help you with today?",
	"Take your time."}

type apiMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type apiRequest struct {
	Model     string          `json:"model"`
	MaxTokens int             `json:"max_tokens"`
	System    json.RawMessage `json:"system"`
	Messages  []apiMessage    `json:"messages"`
	Stream    bool            `json:"stream"`
}

func textOf(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var blocks []map[string]interface{}
	if json.Unmarshal(raw, &blocks) != nil || len(blocks) == 0 {
		return "", false
	}
	var parts []string
	for _, b := range blocks {
		if b["type"] == "text" {
			t, _ := b["text"].(string)
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, " "), true
}

func apiError(w http.ResponseWriter, status int, kind, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]interface{}{"type": "error",
		"error": map[string]string{"type": kind, "message": message}})
}

// fakeModel answers after latency; a reply of sentences > 1 writes each further sentence gap later.
// firstSentence, when set, is told the newest marker as the first sentence leaves (streamed replies).
type fakeModel struct {
	latency       time.Duration
	sentences     int
	gap           time.Duration
	firstSentence func(marker string, at time.Time)
}

func (m *fakeModel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/messages" {
		apiError(w, 404, "not_found_error", "no such endpoint")
		return
	}
	if r.Method != http.MethodPost {
		apiError(w, 405, "invalid_request_error", "POST only")
		return
	}
	if r.Header.Get("x-api-key") == "" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		apiError(w, 401, "authentication_error", "no API key")
		return
	}
	if r.Header.Get("anthropic-version") == "" {
		apiError(w, 400, "invalid_request_error", "anthropic-version header is required")
		return
	}
	var req apiRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, 400, "invalid_request_error", "body is not JSON")
		return
	}
	if req.Model == "" || req.MaxTokens < 1 || len(req.Messages) == 0 {
		apiError(w, 400, "invalid_request_error", "model, max_tokens and messages are required")
		return
	}
	var said []string
	for i, msg := range req.Messages {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		text, ok := textOf(msg.Content)
		if msg.Role != want || !ok {
			apiError(w, 400, "invalid_request_error", fmt.Sprintf("messages.%d: roles must alternate from user, content non-empty", i))
			return
		}
		if msg.Role == "user" {
			said = append(said, marker.FindAllString(text, -1)...)
		}
	}
	if req.Messages[len(req.Messages)-1].Role != "user" {
		apiError(w, 400, "invalid_request_error", "the last message must be the user's")
		return
	}
	time.Sleep(m.latency)
	// Newest first: a server that cuts a long reply short keeps the words of this turn.
	for i, j := 0, len(said)-1; i < j; i, j = i+1, j-1 {
		said[i], said[j] = said[j], said[i]
	}
	sentences := []string{"Heard " + strings.Join(said, " ") + "."}
	for i := 1; i < m.sentences; i++ {
		sentences = append(sentences, furtherSentences[(i-1)%len(furtherSentences)])
	}
	text := strings.Join(sentences, " ")
	usage := map[string]int{"input_tokens": 20 * len(req.Messages), "output_tokens": len(strings.Fields(text))}
	if !req.Stream {
		time.Sleep(time.Duration(len(sentences)-1) * m.gap) // the whole reply, written
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]interface{}{"id": "msg_fake", "type": "message", "role": "assistant",
			"model": req.Model, "content": []map[string]string{{"type": "text", "text": text}},
			"stop_reason": "end_turn", "stop_sequence": nil, "usage": usage})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	event := func(e map[string]interface{}) {
		data, _ := json.Marshal(e)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e["type"], data)
	}
	event(map[string]interface{}{"type": "message_start", "message": map[string]interface{}{"id": "msg_fake",
		"type": "message", "role": "assistant", "model": req.Model, "content": []int{}, "stop_reason": nil,
		"usage": map[string]int{"input_tokens": usage["input_tokens"], "output_tokens": 1}}})
	event(map[string]interface{}{"type": "ping"})
	event(map[string]interface{}{"type": "content_block_start", "index": 0,
		"content_block": map[string]string{"type": "text", "text": ""}})
	for n, sentence := range sentences {
		if n > 0 {
			time.Sleep(m.gap)
		}
		for i, word := range strings.Split(sentence, " ") {
			if n > 0 || i > 0 {
				word = " " + word
			}
			event(map[string]interface{}{"type": "content_block_delta", "index": 0,
				"delta": map[string]string{"type": "text_delta", "text": word}})
		}
		if flusher != nil {
			flusher.Flush()
		}
		if n == 0 && m.firstSentence != nil && len(said) > 0 {
			m.firstSentence(said[0], time.Now())
		}
	}
	event(map[string]interface{}{"type": "content_block_stop", "index": 0})
	event(map[string]interface{}{"type": "message_delta", "delta": map[string]interface{}{"stop_reason": "end_turn",
		"stop_sequence": nil}, "usage": map[string]int{"output_tokens": usage["output_tokens"]}})
	event(map[string]interface{}{"type": "message_stop"})
}

func runModel(args []string) {
	fs := flag.NewFlagSet("model", flag.ExitOnError)
	port := fs.Int("port", 9000, "port on 127.0.0.1")
	latency := fs.Float64("latency", 0.7, "seconds before the answer (streamed: before its first sentence)")
	sentences := fs.Int("sentences", 1, "sentences in a reply")
	gap := fs.Float64("sentence-gap", 0, "seconds between sentences")
	fs.Parse(args)
	model := &fakeModel{latency: seconds(*latency), sentences: *sentences, gap: seconds(*gap)}
	log.Fatal(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), model))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
