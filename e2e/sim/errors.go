package sim

import "fmt"

// APIError is an EC2 error response.
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// errorStatus holds the HTTP status EC2 uses when it is not 400.
var errorStatus = map[string]int{
	"AuthFailure":           401,
	"UnauthorizedOperation": 403,
	"SignatureDoesNotMatch": 403,
	"IncompleteSignature":   400,
	"DryRunOperation":       412,
	"RequestLimitExceeded":  503,
	"Unavailable":           503,
	"ServiceUnavailable":    503,
	"InternalError":         500,
	"InternalFailure":       500,
}

// defaultMessages is AWS's wording for codes a fault may inject bare.
var defaultMessages = map[string]string{
	"AuthFailure":           "AWS was not able to validate the provided access credentials",
	"UnauthorizedOperation": "You are not authorized to perform this operation.",
	"RequestLimitExceeded":  "Request limit exceeded.",
	"Unavailable":           "The server is overloaded and can't handle the request.",
	"InternalError":         "An internal error has occurred",
	"DryRunOperation":       "Request would have succeeded, but DryRun flag is set.",
}

func newError(code, msg string) *APIError {
	if msg == "" {
		msg = defaultMessages[code]
		if msg == "" {
			msg = code
		}
	}
	st := errorStatus[code]
	if st == 0 {
		st = 400
	}
	return &APIError{Code: code, Message: msg, Status: st}
}

func errf(code, format string, args ...any) *APIError {
	return newError(code, fmt.Sprintf(format, args...))
}

// Common EC2 errors, worded as EC2 words them.

func errVolumeNotFound(id string) *APIError {
	return errf("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
}

func errVolumeMalformed(id string) *APIError {
	return errf("InvalidVolumeID.Malformed", `Invalid id: "%s" (expecting "vol-...")`, id)
}

func errInstanceNotFound(id string) *APIError {
	return errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

func errInstanceMalformed(id string) *APIError {
	return errf("InvalidInstanceID.Malformed", `Invalid id: "%s" (expecting "i-...")`, id)
}

func errSnapshotNotFound(id string) *APIError {
	return errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
}

func errSnapshotMalformed(id string) *APIError {
	return errf("InvalidSnapshotID.Malformed", `Invalid id: "%s" (expecting "snap-...")`, id)
}

func errImageNotFound(id string) *APIError {
	return errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
}

func errImageMalformed(id string) *APIError {
	return errf("InvalidAMIID.Malformed", `Invalid id: "%s" (expecting "ami-...")`, id)
}

func errMissing(param string) *APIError {
	return errf("MissingParameter", "The request must contain the parameter %s", param)
}

func errInvalidParam(format string, args ...any) *APIError {
	return errf("InvalidParameterValue", format, args...)
}
