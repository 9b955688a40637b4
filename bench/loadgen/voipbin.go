package main

// ---- VoIPBin: its REST API, its signed events, and a caller on each call -----------------------
//
// The REST fake answers as VoIPBin's code does (../shared/voipbin-api.md, and
// voicebot/devtools/fake_voipbin.py, the strict Python fake the suite uses): the
// access key as the accesskey query parameter or cookie, 401 otherwise; errors as
// {"error": {"status", "reason", "message", "request_id"}}; POST /transcribes 200,
// a second progressing one on the call 409; POST /speakings 201, a second active
// one on the call 500; say on a session that is not active 404, text empty or over
// 5,000 bytes 400; lists as {"result", "next_page_token"}; a hang-up stops the
// call's transcribes and speakings. Events go out as VoIPBin sends them: compact
// JSON, signed (X-VoIPBIN-Signature: sha256=<hex HMAC-SHA256 of the body>), sent
// again on a 5xx or a transport error, up to three attempts a second apart.

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const customerID = "5e4a0680-804e-11ec-8477-2fea5968d85b"
const nilUUID = "00000000-0000-0000-0000-000000000000"

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func stamp() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000000Z") }

type said struct {
	at   time.Time
	text string
}

// A transcribe or a speaking: VoIPBin's fields, and the call it belongs to.
type session struct {
	fields map[string]interface{}
	call   string
	status string
	seq    int
}

func (s *session) json() map[string]interface{} {
	out := map[string]interface{}{"status": s.status, "tm_update": stamp()}
	for k, v := range s.fields {
		out[k] = v
	}
	out["status"] = s.status
	return out
}

type fakeCall struct {
	status string
	said   []said
}

type restFake struct {
	key         string
	latency     time.Duration
	mu          sync.Mutex
	calls       map[string]*fakeCall
	transcribes map[string]*session
	speakings   map[string]*session
	seq         int
	requests    map[string]int // "POST say" etc.
}

type apiFault struct {
	status         int
	reason, detail string
}

var reasons = map[int]string{400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
	500: "INTERNAL_ERROR"}

func fault(status int, detail string) *apiFault { return &apiFault{status, reasons[status], detail} }

var speakingAction = regexp.MustCompile(`^/speakings/([^/]+)/(say|flush|stop)$`)
var transcribeStop = regexp.MustCompile(`^/transcribes/([^/]+)/stop$`)
var callPath = regexp.MustCompile(`^/calls/([^/]+)(/hangup)?$`)

func (f *restFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	reply := func(status int, payload interface{}) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(payload)
	}
	refuse := func(e *apiFault) {
		reply(e.status, map[string]interface{}{"error": map[string]interface{}{"status": e.status,
			"reason": e.reason, "message": e.detail, "request_id": newUUID()}})
	}
	if !strings.HasPrefix(r.URL.Path, "/v1.0/") {
		refuse(fault(404, "not found"))
		return
	}
	cookie, _ := r.Cookie("accesskey")
	if r.URL.Query().Get("accesskey") != f.key && (cookie == nil || cookie.Value != f.key) {
		refuse(fault(401, "unauthorized"))
		return
	}
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	body := map[string]interface{}{}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		if len(bytes.TrimSpace(raw)) > 0 && json.Unmarshal(raw, &body) != nil {
			refuse(fault(400, "body must be a JSON object"))
			return
		}
	}
	path := r.URL.Path[len("/v1.0"):]
	f.mu.Lock()
	status, payload, err := f.route(r.Method, path, r.URL.Query(), body)
	f.mu.Unlock()
	if err != nil {
		refuse(err)
		return
	}
	reply(status, payload)
}

func (f *restFake) route(method, path string, query map[string][]string, body map[string]interface{}) (int, interface{}, *apiFault) {
	action := path[strings.LastIndex(path, "/")+1:]
	f.requests[method+" "+action]++
	switch {
	case method == "POST" && path == "/transcribes":
		call, err := f.callFor(body)
		if err != nil {
			return 0, nil, err
		}
		direction, _ := body["direction"].(string)
		if direction == "" {
			direction = "both"
		}
		if direction != "in" && direction != "out" && direction != "both" {
			return 0, nil, fault(400, "direction must be in, out or both")
		}
		for _, t := range f.transcribes {
			if t.call == call && t.fields["language"] == body["language"] && t.status == "progressing" {
				return 0, nil, &apiFault{409, "TRANSCRIBE_ALREADY_PROGRESSING", "the call already has a progressing transcribe"}
			}
		}
		t := f.open(f.transcribes, call, "progressing", map[string]interface{}{"language": body["language"],
			"direction": direction, "tm_delete": nil})
		return 200, t.json(), nil
	case method == "GET" && path == "/transcribes":
		var items []*session
		for _, t := range f.transcribes {
			if query["reference_type"] != nil && query["reference_type"][0] == "call" &&
				query["reference_id"] != nil && query["reference_id"][0] == t.call {
				items = append(items, t)
			}
		}
		return 200, page(items, query), nil
	case method == "POST" && transcribeStop.MatchString(path):
		t := f.transcribes[transcribeStop.FindStringSubmatch(path)[1]]
		if t == nil {
			return 0, nil, fault(404, "transcribe not found")
		}
		t.status = "done"
		return 200, t.json(), nil
	case method == "POST" && path == "/speakings":
		call, err := f.callFor(body)
		if err != nil {
			return 0, nil, err
		}
		direction, _ := body["direction"].(string)
		if direction == "" {
			direction = "out"
		}
		for _, s := range f.speakings {
			if s.call == call && s.status == "active" {
				// streaming-manager fails to open a second stream on the call: a plain 500.
				return 0, nil, fault(500, "could not create the speaking")
			}
		}
		s := f.open(f.speakings, call, "active", map[string]interface{}{"language": body["language"],
			"provider": body["provider"], "voice_id": body["voice_id"], "direction": direction})
		return 201, s.json(), nil
	case method == "GET" && path == "/speakings":
		var items []*session
		for _, s := range f.speakings {
			items = append(items, s)
		}
		return 200, page(items, query), nil
	case method == "POST" && speakingAction.MatchString(path):
		s := f.speakings[speakingAction.FindStringSubmatch(path)[1]]
		if s == nil {
			return 0, nil, fault(404, "speaking not found")
		}
		switch {
		case action == "stop":
			s.status = "stopped"
		case s.status != "active":
			return 0, nil, fault(404, "the speaking is not active")
		case action == "say":
			text, _ := body["text"].(string)
			if strings.TrimSpace(text) == "" || len(text) > 5000 {
				return 0, nil, fault(400, "text must be non-empty and at most 5000 bytes")
			}
			call := f.calls[s.call]
			call.said = append(call.said, said{time.Now(), text})
		}
		return 200, s.json(), nil
	case callPath.MatchString(path):
		match := callPath.FindStringSubmatch(path)
		call := f.calls[match[1]]
		if call == nil {
			return 0, nil, fault(404, "call not found")
		}
		if method == "POST" && match[2] != "" {
			f.end(match[1])
		} else if method != "GET" || match[2] != "" {
			return 0, nil, fault(404, "not found")
		}
		return 200, callData(match[1], call.status, ""), nil
	}
	return 0, nil, fault(404, "not found")
}

func (f *restFake) callFor(body map[string]interface{}) (string, *apiFault) {
	if body["reference_type"] != "call" {
		return "", fault(400, "reference_type must be call")
	}
	id, _ := body["reference_id"].(string)
	call := f.calls[id]
	if call == nil {
		return "", fault(404, "call not found")
	}
	if call.status != "progressing" {
		return "", &apiFault{400, "FAILED_PRECONDITION", "the call is not live"}
	}
	if language, _ := body["language"].(string); language == "" {
		return "", fault(400, "language is required")
	}
	return id, nil
}

func (f *restFake) open(table map[string]*session, call, status string, fields map[string]interface{}) *session {
	f.seq++
	id := newUUID()
	fields["id"], fields["customer_id"], fields["reference_type"], fields["reference_id"] = id, customerID, "call", call
	fields["tm_create"] = stamp()
	s := &session{fields: fields, call: call, status: status, seq: f.seq}
	table[id] = s
	return s
}

func page(items []*session, query map[string][]string) map[string]interface{} {
	sort.Slice(items, func(i, j int) bool { return items[i].seq > items[j].seq }) // newest first
	size, start := 100, 0
	if v := query["page_size"]; v != nil {
		if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
			size = n
		}
	}
	if v := query["page_token"]; v != nil && v[0] != "" {
		start, _ = strconv.Atoi(v[0])
	}
	result, next := []map[string]interface{}{}, ""
	for i := start; i < len(items) && i < start+size; i++ {
		result = append(result, items[i].json())
	}
	if start+size < len(items) {
		next = strconv.Itoa(start + size)
	}
	return map[string]interface{}{"result": result, "next_page_token": next}
}

func (f *restFake) answer(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[id] = &fakeCall{status: "progressing"}
}

// end hangs the call up, as VoIPBin does: its transcribes and speakings stop with it. The lock is held.
func (f *restFake) end(id string) {
	f.calls[id].status = "hangup"
	for _, t := range f.transcribes {
		if t.call == id {
			t.status = "done"
		}
	}
	for _, s := range f.speakings {
		if s.call == id {
			s.status = "stopped"
		}
	}
}

func (f *restFake) saidSince(id string, from int) []said {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]said(nil), f.calls[id].said[from:]...)
}

func (f *restFake) saidCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls[id].said)
}

func (f *restFake) transcribeOf(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for tid, t := range f.transcribes {
		if t.call == id && t.status == "progressing" {
			return tid
		}
	}
	return ""
}

// callData is a call event's data, shaped as VoIPBin's (empty address fields and unset times left out).
func callData(id, status, callee string) map[string]interface{} {
	if callee == "" {
		callee = "+15559870000"
	}
	data := map[string]interface{}{"id": id, "customer_id": customerID, "owner_type": "", "owner_id": nilUUID,
		"flow_id": newUUID(), "activeflow_id": newUUID(), "type": "flow", "master_call_id": nilUUID,
		"chained_call_ids": []string{}, "recording_id": nilUUID, "recording_ids": []string{},
		"groupcall_id": nilUUID, "source": map[string]string{"type": "tel", "target": "+15551230000"},
		"destination": map[string]string{"type": "tel", "target": callee}, "status": status,
		"action": map[string]string{"id": nilUUID, "next_id": nilUUID, "type": ""}, "direction": "incoming",
		"mute_direction": "", "hangup_by": "", "hangup_reason": "", "tm_create": stamp(), "tm_update": stamp()}
	if status == "progressing" {
		data["tm_progressing"] = stamp()
	}
	if status == "hangup" {
		data["hangup_by"], data["hangup_reason"], data["tm_hangup"] = "remote", "normal", stamp()
	}
	return data
}

var firstSentenceTiming = regexp.MustCompile(`llm-first;dur=([0-9.]+)`)

type voipbinTurn struct {
	firstWord, modelFirst, afterFlush, latency time.Duration
	hasModelFirst, hasFlush                    bool
}

func runVoipbin(args []string) {
	fs := flag.NewFlagSet("voipbin", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8000", "voicebot")
	restPort := fs.Int("rest-port", 9100, "port of the REST fake on 127.0.0.1 (voicebot's VOIPBIN_API_URL: http://127.0.0.1:PORT/v1.0)")
	key := fs.String("access-key", "test-access-key", "voicebot's VOIPBIN_ACCESS_KEY")
	secret := fs.String("secret", "test-webhook-secret-0123456789ab", "voicebot's VOIPBIN_WEBHOOK_SECRET")
	number := fs.String("number", "+15559870000", "the number called: one of voicebot's VOIPBIN_NUMBERS")
	restLatency := fs.Float64("rest-latency", 0, "seconds the REST fake takes a request")
	modelPort := fs.Int("model-port", 9000, "port of the model on 127.0.0.1 (voicebot's ANTHROPIC_BASE_URL)")
	modelLatency := fs.Float64("model-latency", 0.3, "seconds to the model's first sentence")
	sentences := fs.Int("sentences", 3, "sentences in a reply")
	gap := fs.Float64("sentence-gap", 0.3, "seconds between sentences")
	calls := fs.Int("calls", 200, "calls")
	turns := fs.Int("turns", 4, "turns per call")
	think := fs.Float64("think", 1, "seconds between a reply and the next transcript")
	ramp := fs.Float64("ramp", 5, "seconds over which the calls start")
	fs.Parse(args)

	flushed := sync.Map{} // marker -> when the model's first sentence left
	model := &fakeModel{latency: seconds(*modelLatency), sentences: *sentences, gap: seconds(*gap),
		firstSentence: func(m string, at time.Time) { flushed.Store(m, at) }}
	rest := &restFake{key: *key, latency: seconds(*restLatency), calls: map[string]*fakeCall{},
		transcribes: map[string]*session{}, speakings: map[string]*session{}, requests: map[string]int{}}
	for port, handler := range map[int]http.Handler{*modelPort: model, *restPort: rest} {
		listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			log.Fatalf("loadgen voipbin: %v", err)
		}
		go http.Serve(listener, handler)
	}

	client := &http.Client{Timeout: 15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *calls + 16, MaxIdleConns: *calls + 16,
			DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext, DisableCompression: true}}
	var mu sync.Mutex
	errors := map[string]int{}
	redelivered := 0
	failed := func(kind string) {
		mu.Lock()
		errors[kind]++
		mu.Unlock()
	}
	// One event, as VoIPBin's sender: signed, and sent again a second later on a 5xx or a transport error.
	send := func(eventType string, data map[string]interface{}) (int, http.Header, []byte) {
		body, _ := json.Marshal(map[string]interface{}{"type": eventType, "data": data})
		mac := hmac.New(sha256.New, []byte(*secret))
		mac.Write(body)
		status, header, answer := 0, http.Header{}, []byte(nil)
		for attempt := 0; attempt < 3; attempt++ {
			if attempt > 0 {
				mu.Lock()
				redelivered++
				mu.Unlock()
				time.Sleep(time.Second)
			}
			req, _ := http.NewRequest("POST", *url+"/webhook/voipbin", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-VoIPBIN-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
			resp, err := client.Do(req)
			if err != nil {
				status = 0
				continue
			}
			answer, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			status, header = resp.StatusCode, resp.Header
			if status < 500 {
				break
			}
		}
		return status, header, answer
	}

	var turnsDone []voipbinTurn
	var greetings []time.Duration
	mixedUp := 0
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	cpuBefore := cpuSeconds()
	started := time.Now()
	eachCall(*calls, *ramp, func(c int) {
		id := newUUID()
		rest.answer(id)
		sent := time.Now()
		if status, _, _ := send("call_progressing", callData(id, "progressing", *number)); status != 200 {
			failed(fmt.Sprintf("call_progressing_%d", status))
			return
		}
		if greeting := rest.saidSince(id, 0); len(greeting) > 0 {
			mu.Lock()
			greetings = append(greetings, greeting[0].at.Sub(sent))
			mu.Unlock()
		} else {
			failed("no_greeting")
		}
		transcribe := rest.transcribeOf(id)
		if transcribe == "" {
			failed("no_transcribe")
			return
		}
		prefix := fmt.Sprintf("mk%sx%dx", run, c)
		for t := 0; t < *turns; t++ {
			time.Sleep(seconds(*think))
			mine := fmt.Sprintf("%s%d", prefix, t)
			before := rest.saidCount(id)
			sent := time.Now()
			status, header, answer := send("transcript_created", map[string]interface{}{"id": newUUID(),
				"customer_id": customerID, "transcribe_id": transcribe, "direction": "in",
				"message": "Caller turn " + mine + ", please.", "tm_transcript": "0001-01-01T00:00:08.99184Z",
				"tm_create": stamp()})
			took := time.Since(sent)
			var outcome struct{ Status string }
			json.Unmarshal(answer, &outcome)
			if status != 200 || outcome.Status != "said" {
				failed(fmt.Sprintf("turn_%d_%s", status, outcome.Status))
				continue
			}
			says := rest.saidSince(id, before)
			if len(says) == 0 {
				failed("nothing_said")
				continue
			}
			var texts []string
			for _, s := range says {
				texts = append(texts, s.text)
			}
			wrong := crossed(strings.Join(texts, " "), mine, prefix)
			turn := voipbinTurn{firstWord: says[0].at.Sub(sent), latency: took}
			if m := firstSentenceTiming.FindStringSubmatch(header.Get("Server-Timing")); m != nil {
				ms, _ := strconv.ParseFloat(m[1], 64)
				turn.modelFirst, turn.hasModelFirst = time.Duration(ms*float64(time.Millisecond)), true
			}
			if at, ok := flushed.LoadAndDelete(mine); ok {
				turn.afterFlush, turn.hasFlush = says[0].at.Sub(at.(time.Time)), true
			}
			mu.Lock()
			turnsDone = append(turnsDone, turn)
			if wrong {
				mixedUp++
			}
			mu.Unlock()
		}
		rest.mu.Lock()
		rest.end(id)
		rest.mu.Unlock()
		if status, _, _ := send("call_hangup", callData(id, "hangup", *number)); status != 200 {
			failed(fmt.Sprintf("call_hangup_%d", status))
		}
	})
	elapsed := time.Since(started).Seconds()
	rest.mu.Lock()
	defer rest.mu.Unlock()

	stats := func(values []float64) map[string]float64 {
		sort.Float64s(values)
		return map[string]float64{"p50": percentile(values, 50), "p90": percentile(values, 90),
			"p99": percentile(values, 99), "max": percentile(values, 100), "n": float64(len(values))}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var firstWord, modelFirst, beyond, afterFlush, latency, greeting []float64
	for _, t := range turnsDone {
		firstWord = append(firstWord, ms(t.firstWord))
		latency = append(latency, ms(t.latency))
		if t.hasModelFirst {
			modelFirst = append(modelFirst, ms(t.modelFirst))
			beyond = append(beyond, ms(t.firstWord-t.modelFirst))
		}
		if t.hasFlush {
			afterFlush = append(afterFlush, ms(t.afterFlush))
		}
	}
	for _, g := range greetings {
		greeting = append(greeting, ms(g))
	}
	out, _ := json.Marshal(map[string]interface{}{
		"calls": *calls, "turns": *calls * *turns, "ok": len(turnsDone), "errors": errors, "crossed": mixedUp,
		"redelivered": redelivered, "seconds": elapsed, "turns_per_s": float64(len(turnsDone)) / elapsed,
		"first_word_ms": stats(firstWord), "model_first_sentence_ms": stats(modelFirst),
		"first_word_beyond_ms": stats(beyond), "say_after_model_flush_ms": stats(afterFlush),
		"turn_ms": stats(latency), "greeting_ms": stats(greeting), "rest_requests": rest.requests,
		"generator_cpu_s": cpuSeconds() - cpuBefore,
	})
	fmt.Println(string(out))
}
