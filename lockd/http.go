package lockd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/updog/updog/internal/fleetlock"
)

// Error kinds in answers. The set is small and fixed, as the protocol asks.
const (
	KindFull           = "failed_lock_semaphore_full"
	KindUnavailable    = "etcd_unavailable"
	KindContention     = "contention"
	KindCorrupt        = "state_corrupt"
	KindBadRequest     = "bad_request"
	KindNotFound       = "not_found"
	KindMethod         = "method_not_allowed"
	KindInternal       = "internal_error"
	KindClientCanceled = "canceled"
)

// answer is the protocol's error object, with updog-lockd's counts on a
// full semaphore and on success.
type answer struct {
	Kind    string `json:"kind,omitempty"`
	Value   string `json:"value,omitempty"`
	Group   string `json:"group,omitempty"`
	Slots   *int   `json:"slots,omitempty"`
	Holders *int   `json:"holders,omitempty"`
}

type requestBody struct {
	ClientParams *struct {
		Group *string `json:"group"`
		ID    *string `json:"id"`
	} `json:"client_params"`
}

// ServeHTTP answers the FleetLock protocol:
//
//	200  granted / released             {"group","slots","holders"}
//	400  bad_request                    no protocol header, bad JSON, body
//	                                    over MaxRequestBody, bad group or ID
//	404  not_found                      any other path
//	405  method_not_allowed             a method other than POST (Allow: POST)
//	423  failed_lock_semaphore_full     pre-reboot with every slot held by others,
//	                                    with "slots" and "holders"
//	500  state_corrupt                  the group's key does not decode
//	503  etcd_unavailable, contention   etcd failed, timed out, or the
//	                                    transaction kept losing (Retry-After: 1)
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var lock bool
	switch r.URL.Path {
	case fleetlock.PathPreReboot:
		lock = true
	case fleetlock.PathSteadyState:
	default:
		reply(w, http.StatusNotFound, answer{Kind: KindNotFound, Value: "no such endpoint: use POST " + fleetlock.PathPreReboot + " or " + fleetlock.PathSteadyState})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, answer{Kind: KindMethod, Value: "only POST is accepted"})
		return
	}
	if !strings.EqualFold(strings.TrimSpace(r.Header.Get(fleetlock.Header)), "true") {
		reply(w, http.StatusBadRequest, answer{Kind: KindBadRequest, Value: "missing header " + fleetlock.Header + ": true"})
		return
	}
	group, id, err := readBody(w, r)
	if err != nil {
		reply(w, http.StatusBadRequest, answer{Kind: KindBadRequest, Value: err.Error()})
		return
	}
	op, do := "steady-state", s.Unlock
	if lock {
		op, do = "pre-reboot", s.Lock
	}
	st, err := do(r.Context(), group, id)
	log := s.log.With("op", op, "group", group, "id", id, "remote", r.RemoteAddr)
	var full *FullError
	switch {
	case err == nil:
		slots, holders := st.Slots, len(st.Holders)
		log.Info("ok", "slots", slots, "holders", holders)
		reply(w, http.StatusOK, answer{Group: group, Slots: &slots, Holders: &holders})
	case errors.As(err, &full):
		log.Info("refused: full", "slots", full.Slots, "holders", full.Holders)
		reply(w, http.StatusLocked, answer{Kind: KindFull, Group: group, Slots: &full.Slots, Holders: &full.Holders,
			Value: fmt.Sprintf("all %d slots of group %s are held", full.Slots, group)})
	case errors.Is(err, ErrInvalid):
		reply(w, http.StatusBadRequest, answer{Kind: KindBadRequest, Value: err.Error()})
	case errors.Is(err, ErrCorrupt):
		log.Error("corrupt state", "err", err)
		reply(w, http.StatusInternalServerError, answer{Kind: KindCorrupt, Value: err.Error()})
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		log.Info("client went away", "err", err)
		reply(w, http.StatusServiceUnavailable, answer{Kind: KindClientCanceled, Value: "request canceled"})
	case errors.Is(err, ErrContention):
		log.Warn("contention", "err", err)
		w.Header().Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, answer{Kind: KindContention, Value: err.Error()})
	case errors.Is(err, ErrUnavailable):
		log.Warn("etcd unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, answer{Kind: KindUnavailable, Value: err.Error()})
	default:
		log.Error("failed", "err", err)
		reply(w, http.StatusInternalServerError, answer{Kind: KindInternal, Value: err.Error()})
	}
}

func readBody(w http.ResponseWriter, r *http.Request) (group, id string, err error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", "", fmt.Errorf("body larger than %d bytes", MaxRequestBody)
		}
		return "", "", fmt.Errorf("reading body: %w", err)
	}
	var body requestBody
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&body); err != nil {
		return "", "", fmt.Errorf("body is not JSON: %w", err)
	}
	if dec.More() {
		return "", "", errors.New("body has data after the JSON object")
	}
	if body.ClientParams == nil || body.ClientParams.Group == nil || body.ClientParams.ID == nil {
		return "", "", errors.New(`body lacks client_params.group or client_params.id`)
	}
	group, id = *body.ClientParams.Group, *body.ClientParams.ID
	if !fleetlock.ValidGroup(group) {
		return "", "", fmt.Errorf("group %q: want 1-%d of a-z A-Z 0-9 . -", clip(group), fleetlock.MaxGroup)
	}
	if !fleetlock.ValidID(id) {
		return "", "", fmt.Errorf("id %q: want 1-%d printable ASCII characters, no spaces", clip(id), fleetlock.MaxID)
	}
	return group, id, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func reply(w http.ResponseWriter, status int, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}
