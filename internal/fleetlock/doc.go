// Package fleetlock is a client for the FleetLock protocol, the HTTP
// protocol with which Fedora CoreOS's Zincati asks a reboot coordinator
// (airlock, poseidon/fleetlock, updog-lockd) for a reboot slot.
//
// # Protocol
//
// The server is a counting semaphore per group, with owned and recursive
// locks. A client sends
//
//	POST {base}/v1/pre-reboot     take a slot (granted again to a holder)
//	POST {base}/v1/steady-state   give back its slot (a no-op for a non-holder)
//
// with the header "fleet-lock-protocol: true" and the JSON body
// {"client_params":{"group":G,"id":ID}}. 200 means granted (or released);
// any other status means "not now", usually with a JSON body
// {"kind":K,"value":V} to report. Servers seen in the field refuse a full
// semaphore differently: airlock with 500 and kind "failed_lock", poseidon's
// fleetlock with 423 Locked; the client treats every non-200 the same way
// and keeps the status, kind and value in a [RefusedError].
//
// # What the client does and never does
//
// Any answer but 200 is "not now", and every one is asked again:
// [Client.PreReboot] and [Client.SteadyState] retry every non-200 answer
// and every transport failure (connection refused or dropped, a stalled
// server past the per-request timeout) with exponential backoff, since
// both operations are idempotent on the server, within a bound: a number
// of tries, or a total time ([Client.MaxWait]) after which the last answer
// is returned, so that the caller reports why it waits. A host must not
// keep a slot because of a transient server failure, nor give up on a
// slot because one answer said "not now". Redirects are never followed
// (the protocol's header exists so that a redirected request is not taken
// for a deliberate one), response bodies are read up to
// [MaxResponseBody], and every wait honours the context: a cancelled
// context ends a call at once.
//
// The ID a host sends is [MachineAppID] of /etc/machine-id with updog's
// application ID (see [DefaultID]): stable across reboots and reinstalls
// of the same machine ID, yet not the machine ID itself, which systemd
// documents as confidential.
//
// The package uses only the standard library and holds no global state;
// a Client may be used by several goroutines at once.
package fleetlock
