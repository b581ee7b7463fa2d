// Package sim is the simulated cloud for spotroot's QEMU end-to-end tests:
// the EC2 Query API, one IMDSv2 per instance, and the EBS attach/detach
// state machine, with the hot-plug itself delegated to whoever runs the
// VMs. Nothing here talks to AWS.
//
// State lives in a World persisted as JSON after every change, so it
// survives VM reboots and harness processes:
//
//	w, _ := sim.Load(dir + "/world.json")
//	inst := sim.NewInstanceID()
//	w.AddVolume(sim.Volume{ID: sim.NewVolumeID(), AZ: "us-east-1a", ImagePath: img,
//		Tags: map[string]string{"Name": "home-root"}})
//	w.AddInstance(sim.Instance{ID: inst, AZ: "us-east-1a", Role: "spotroot",
//		UserData: cloudConfig, BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}})
//
//	s := sim.NewServer(w)
//	defer s.Close()
//	go http.Serve(ec2Listener, s.EC2Handler())        // guest: 169.254.169.250:80
//	go http.Serve(imdsListener, s.IMDSHandler(inst))  // guest: 169.254.169.254:80
//	s.Bind(inst, qemuHotplugger)                      // once the VM runs; Unbind when it exits
//
// The EC2 API authenticates callers by SigV4 with the instance's role
// credentials (what its IMDS hands out) or the world's Operator key, and
// authorises each call of an instance against its role's policy document
// (World.SetRolePolicy; iam.go evaluates it as IAM does). Every call is
// appended to a CloudTrail-style audit log beside the world file
// (AuditPath, ReadAudit, Server.AuditEvents).
// Failures are injected through World.Faults (per action, plus
// FaultHotplugAttach/FaultHotplugDetach), World.DenyActions, the
// Attach/Detach/Create latencies, and the per-instance IMDS knobs
// (IMDSv1Only, IMDSDelay, IMDSFailFirst).
package sim
