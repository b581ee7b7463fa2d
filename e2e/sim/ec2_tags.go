package sim

// maxTags is EC2's limit of user tags per resource.
const maxTags = 50

// tagsOfLocked finds the tag map of a resource by id, creating an empty
// one so callers can write to it.
func (w *World) tagsOfLocked(id string) (*map[string]string, *APIError) {
	var tags *map[string]string
	switch idPrefix(id) {
	case "vol":
		if !validID(id, "vol") {
			return nil, errVolumeMalformed(id)
		}
		if v, ok := w.Volumes[id]; ok {
			tags = &v.Tags
		} else {
			return nil, errVolumeNotFound(id)
		}
	case "i":
		if !validID(id, "i") {
			return nil, errInstanceMalformed(id)
		}
		if i, ok := w.Instances[id]; ok {
			tags = &i.Tags
		} else {
			return nil, errInstanceNotFound(id)
		}
	case "snap":
		if !validID(id, "snap") {
			return nil, errSnapshotMalformed(id)
		}
		if s, ok := w.Snapshots[id]; ok {
			tags = &s.Tags
		} else {
			return nil, errSnapshotNotFound(id)
		}
	case "ami":
		if !validID(id, "ami") {
			return nil, errImageMalformed(id)
		}
		if m, ok := w.Images[id]; ok {
			tags = &m.Tags
		} else {
			return nil, errImageNotFound(id)
		}
	default:
		return nil, errf("InvalidID", "The ID '%s' is not valid", id)
	}
	if *tags == nil {
		*tags = map[string]string{}
	}
	return tags, nil
}

func (s *Server) createTags(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("ResourceId")
	if len(ids) == 0 {
		return nil, errMissing("resourceIdSet")
	}
	tags := c.tagList("Tag")
	if len(tags) == 0 {
		return nil, errMissing("tagSet")
	}
	for _, t := range tags {
		if e := checkTag(t.Key, t.Value); e != nil {
			return nil, e
		}
	}
	// Validate all resources first: EC2 tags all or nothing.
	var targets []*map[string]string
	for _, id := range ids {
		m, e := w.tagsOfLocked(id)
		if e != nil {
			return nil, e
		}
		n := len(*m)
		for _, t := range tags {
			if _, ok := (*m)[t.Key]; !ok {
				n++
			}
		}
		if n > maxTags {
			return nil, errf("TagLimitExceeded", "The maximum number of Tags for a resource has been reached.")
		}
		targets = append(targets, m)
	}
	for _, m := range targets {
		for _, t := range tags {
			(*m)[t.Key] = t.Value
		}
	}
	return &returnResponse{Return: true}, nil
}

func (s *Server) deleteTags(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("ResourceId")
	if len(ids) == 0 {
		return nil, errMissing("resourceIdSet")
	}
	tags := c.tagList("Tag")
	var targets []*map[string]string
	for _, id := range ids {
		m, e := w.tagsOfLocked(id)
		if e != nil {
			return nil, e
		}
		targets = append(targets, m)
	}
	for _, m := range targets {
		if len(tags) == 0 {
			clear(*m) // no Tag parameter: delete every user tag
			continue
		}
		for _, t := range tags {
			// A Value restricts the delete to that value; an empty one
			// matches only an empty value, as EC2 does.
			if v, ok := (*m)[t.Key]; ok && (!t.hasValue || v == t.Value) {
				delete(*m, t.Key)
			}
		}
	}
	return &returnResponse{Return: true}, nil
}
