package sim

import (
	"bytes"
	"encoding/xml"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"
)

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// response is an action's payload: a struct whose fields are the children
// of <ActionResponse>, embedding respBase for the request id.
type response interface{ setRequestID(string) }

type respBase struct {
	RequestID string `xml:"requestId"`
}

func (b *respBase) setRequestID(id string) { b.RequestID = id }

// returnResponse is the body of actions that only say it worked.
type returnResponse struct {
	respBase
	Return bool `xml:"return"`
}

// writeResponse writes <ActionResponse xmlns=...> around the payload.
func writeResponse(rw http.ResponseWriter, action, requestID string, resp response) {
	resp.setRequestID(requestID)
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	start := xml.StartElement{
		Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: ec2Namespace}},
	}
	if err := xml.NewEncoder(&buf).EncodeElement(resp, start); err != nil {
		writeError(rw, requestID, newError("InternalError", ""))
		return
	}
	writeXML(rw, http.StatusOK, buf.Bytes())
}

type xmlErrorResponse struct {
	XMLName   xml.Name `xml:"Response"`
	Code      string   `xml:"Errors>Error>Code"`
	Message   string   `xml:"Errors>Error>Message"`
	RequestID string   `xml:"RequestID"`
}

// writeError writes EC2's error document with the error's status.
func writeError(rw http.ResponseWriter, requestID string, e *APIError) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	xml.NewEncoder(&buf).Encode(xmlErrorResponse{Code: e.Code, Message: e.Message, RequestID: requestID})
	writeXML(rw, e.Status, buf.Bytes())
}

func writeXML(rw http.ResponseWriter, status int, b []byte) {
	rw.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	rw.Header().Set("Content-Length", strconv.Itoa(len(b)))
	rw.Header().Set("Server", "AmazonEC2")
	rw.WriteHeader(status)
	rw.Write(b)
}

// awsTime formats timestamps as EC2 does (UTC, milliseconds).
func awsTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// apiTime renders a time the world recorded (by the guests' clock, which
// the simulator runs on) as EC2 reports it: by EC2's own clock, the one
// its Date header carries (ec2NowLocked). EC2 stamps them on its side
// ("AttachTime: The time stamp when the attachment initiated", API
// reference, VolumeAttachment), and a guest's clock can be minutes off
// EC2's (why the SDKs correct skew from Date: aws/aws-sdk-go-v2#272,
// https://aws.amazon.com/blogs/developer/clock-skew-correction/). An
// AttachTime and the Date of the same answer must agree, or a client
// comparing them (the pool claim's view of how busy the pool is, the age
// of an attachment whose owner is not visible yet) reads a skewed past.
func (w *World) apiTime(t time.Time) string {
	return awsTime(t.Add(w.Hostile.ClockSkew))
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

// xmlTags renders a tag map as tagSet items, sorted for stable output.
func xmlTags(tags map[string]string) []xmlTag {
	var out []xmlTag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, xmlTag{Key: k, Value: tags[k]})
	}
	return out
}
