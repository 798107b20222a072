package updater

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/failpoint"
	"github.com/updog/updog/internal/sysutil"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

// CheckOptions choose the release.
type CheckOptions struct {
	// IgnoreWaves is --now: take the release whatever the host's wave.
	IgnoreWaves bool
	// Image is --image VERSION: exactly this release.
	Image string
}

// Plan is what an update would do: the release, the host's place in its
// rollout, and, when the disk was looked at, the set and partitions it
// would write.
type Plan struct {
	Running Running        `json:"running"`
	Wave    waves.Decision `json:"wave"`
	Skipped []Failure      `json:"skipped,omitempty"`
	Set     string         `json:"set,omitempty"`
	Images  []PlannedImage `json:"images"`
	Seed    uint32         `json:"seed"`
	// Staged is set when the release was already written and verified
	// (an earlier run that waited for its switch): nothing was downloaded.
	Staged bool             `json:"staged,omitempty"`
	update *manifest.Update // the chosen release
	// DownloadBytes is the total signed length of the images.
	DownloadBytes int64 `json:"download_bytes"`
	// Delta is the delta install of the root image (delta.go), when
	// planned.
	Delta *DeltaPlan `json:"delta,omitempty"`
}

// Update is the chosen release (nil when there is none).
func (p *Plan) Update() *manifest.Update { return p.update }

func (p *Plan) release() Release {
	if p.update == nil {
		return Release{}
	}
	return Release{Variant: p.update.Variant, Arch: p.update.Arch, Version: p.update.Version.String()}
}

// decideFor refreshes the repository and picks the release.
func (u *Updater) decideFor(ctx context.Context, st *State, co CheckOptions) (*Plan, *tufclient.Client, *manifest.Manifest, DecideInput, error) {
	var in DecideInput
	running, err := u.running()
	if err != nil {
		return nil, nil, nil, in, err
	}
	host, _ := u.host(st)
	plan := &Plan{Running: running, Seed: host.Seed}
	c, m, err := u.refresh(ctx, host, running)
	if err != nil {
		return plan, nil, nil, in, err
	}
	if u.graceUsed > 0 {
		st.Grace = &GraceUse{At: u.now().UTC(), ExpiredBy: u.graceUsed, From: u.o.From}
	}
	in = DecideInput{Manifest: m, Running: running, Lock: u.cfg.VersionLock, Host: host,
		IgnoreWaves: u.cfg.IgnoreWaves || co.IgnoreWaves, Failed: st.Failed, Now: u.now()}
	if co.Image != "" {
		v, err := manifest.ParseVersionLock(co.Image)
		if err != nil {
			return plan, c, m, in, fmt.Errorf("--image %q: %w", co.Image, err)
		}
		in.Want = &v
	}
	choice, err := Decide(in)
	plan.update, plan.Wave, plan.Skipped = choice.Update, choice.Wave, choice.Skipped
	if choice.Update != nil {
		if ierr := u.planImages(c, plan); ierr != nil && err == nil {
			err = ierr
		}
	}
	return plan, c, m, in, err
}

// planImages looks up the signed lengths of the release's images.
func (u *Updater) planImages(c *tufclient.Client, plan *Plan) error {
	up := plan.update
	sizes := up.Images.Sizes
	plan.Images = nil
	plan.DownloadBytes = 0
	for _, k := range []struct {
		kind, name string
		size       int64
	}{{KindBoot, up.Images.Boot, 0}, {KindHash, up.Images.Hash, 0}, {KindRoot, up.Images.Root, 0}} {
		img := PlannedImage{Kind: k.kind, Target: k.name}
		if sizes != nil {
			img.ImageBytes = map[string]int64{KindBoot: sizes.Boot, KindRoot: sizes.Root, KindHash: sizes.Hash}[k.kind]
		}
		tf, err := c.Target(k.name)
		if err != nil {
			return translate(fmt.Errorf("%s image of %s: %w", k.kind, plan.release(), err))
		}
		if tf.Length <= 0 {
			return fmt.Errorf("%w: the %s image %s of %s is signed as empty", ErrCorrupt, k.kind, k.name, plan.release())
		}
		img.tf, img.DownloadBytes = tf, tf.Length
		plan.DownloadBytes += tf.Length
		plan.Images = append(plan.Images, img)
	}
	return nil
}

// Check is check-update: the release this host would take now. It returns
// the plan with ErrNotInWave when the host must wait, and ErrNoUpdate when
// there is nothing to take. The disk, when it can be read, is used to
// learn which releases failed here.
func (u *Updater) Check(ctx context.Context, co CheckOptions) (*Plan, error) {
	st, err := u.stateWithDisk(ctx)
	if err != nil {
		return nil, err
	}
	plan, c, _, _, err := u.decideFor(ctx, st, co)
	if err == nil || errors.Is(err, ErrNotInWave) {
		u.checkDelta(ctx, c, plan)
	}
	if u.graceUsed > 0 && u.store.held != nil {
		if serr := u.store.save(st); serr != nil && err == nil {
			err = serr
		}
	}
	return plan, err
}

// CheckAll is check-update --all: every applicable release.
func (u *Updater) CheckAll(ctx context.Context, co CheckOptions) ([]Listed, Running, error) {
	st, err := u.stateWithDisk(ctx)
	if err != nil {
		return nil, Running{}, err
	}
	running, err := u.running()
	if err != nil {
		return nil, running, err
	}
	host, _ := u.host(st)
	_, m, err := u.refresh(ctx, host, running)
	if err != nil {
		return nil, running, err
	}
	return ListApplicable(DecideInput{Manifest: m, Running: running, Host: host,
		IgnoreWaves: u.cfg.IgnoreWaves || co.IgnoreWaves, Failed: st.Failed, Now: u.now()}), running, nil
}

// stateWithDisk loads the state, reconciled with the disk when the disk
// and the active set can be learned (so failed boots are known).
func (u *Updater) stateWithDisk(ctx context.Context) (*State, error) {
	s, err := u.openSession(ctx, true, false)
	if err != nil {
		if u.o.Disk != "" {
			return nil, err
		}
		u.log.Warn("the disk could not be read; releases that failed here may not be known yet", "err", err)
		return u.store.load()
	}
	defer s.close()
	if u.store.held != nil {
		s.steadyState(ctx)
	}
	if s.st != nil && u.store.held != nil {
		if err := u.store.save(s.st); err != nil {
			return nil, err
		}
	}
	return s.st, nil
}

// UpdateOptions control Update.
type UpdateOptions struct {
	CheckOptions
	// DryRun returns the plan and changes nothing.
	DryRun bool
	// Apply switches to the new set after writing it (update); without it
	// the images are only written and verified (update-image).
	Apply bool
	// Reboot restarts into the new set after the switch.
	Reboot bool
}

// Update is update, update-image and update --dry-run.
func (u *Updater) Update(ctx context.Context, o UpdateOptions) (*Plan, error) {
	s, err := u.openSession(ctx, o.DryRun, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.dual(); err != nil {
		return nil, err
	}
	if !o.DryRun {
		s.steadyState(ctx)
	}
	plan, c, _, _, err := u.decideFor(ctx, s.st, o.CheckOptions)
	if err != nil {
		return plan, err
	}
	in := s.inactive()
	plan.Set = in.String()
	parts := s.l.Sets[in]
	for i := range plan.Images {
		img := &plan.Images[i]
		n := map[string]int{KindBoot: parts.Boot, KindRoot: parts.Root, KindHash: parts.Hash}[img.Kind]
		p := s.t.Partition(n)
		img.Partition, img.PartitionName = n, p.Name()
		img.PartitionBytes = int64(p.Sectors()) * int64(s.t.SectorSize)
		if img.ImageBytes > img.PartitionBytes {
			return plan, fmt.Errorf("%w: the %s image %s is %d bytes, partition %d (%s) holds %d: nothing was written",
				ErrImageTooLarge, img.Kind, img.Target, img.ImageBytes, n, img.PartitionName, img.PartitionBytes)
		}
	}
	if o.DryRun {
		return plan, s.planDelta(ctx, c, plan)
	}
	// Overwriting the inactive set destroys it. When the running set has
	// not proven itself, the inactive set may be the only good one.
	if act := gptprio.Attrs(s.t, s.l, s.active); !act.Successful() && gptprio.Attrs(s.t, s.l, in).WillBoot() {
		return plan, fmt.Errorf("%w: set %s is running but not marked good, and set %s is the known-good fallback; run `updog mark-good` first",
			ErrUnproven, s.active, in)
	}
	rel := plan.release()
	if p := s.st.Pending; p != nil && p.Stage == StageApplied && p.Release == rel && p.Set == in.String() {
		// Already switched to it, waiting for the reboot.
		plan.Staged = true
		if o.Reboot && !o.DryRun {
			return plan, s.reboot(ctx)
		}
		return plan, nil
	}
	if s.staged(rel) {
		plan.Staged = true
		// A run killed after it recorded the set as written and before it
		// dropped the install's checkpoint left it: it is done with.
		if err := u.store.dropCheckpoint(); err != nil {
			return plan, err
		}
		failpoint.Hit("checkpoint-dropped-staged")
		// Written and verified earlier (the switch waited for a window or
		// the fleet lock): go straight to the switch.
		if !o.Apply {
			return plan, nil
		}
		if err := s.permit(ctx, false); err != nil {
			return plan, err
		}
		if err := s.switchTo(ctx, false); err != nil {
			return plan, err
		}
		if o.Reboot {
			return plan, s.reboot(ctx)
		}
		return plan, nil
	}
	if err := s.planDelta(ctx, c, plan); err != nil {
		return plan, err
	}
	now := u.now().UTC()
	s.st.Pending = &Pending{Release: rel, Set: in.String(), Stage: StageWriting, StartedAt: now}
	action := "update-image"
	if o.Apply {
		action = "update"
	}
	s.st.LastAttempt = &Attempt{Action: action, Release: &rel, Started: now, Outcome: "in progress"}
	delete(s.st.Sets, in.String())
	if err := u.store.save(s.st); err != nil {
		return plan, err
	}
	rec, err := s.install(ctx, c, plan)
	s.st.LastAttempt.Ended, s.st.LastAttempt.Resumes, s.st.LastAttempt.Note = u.now().UTC(), s.lastResumes, s.note()
	if err != nil {
		s.st.Pending = nil
		s.st.LastAttempt.Outcome, s.st.LastAttempt.Error = "failed", err.Error()
		if ctx.Err() != nil {
			s.st.LastAttempt.Outcome = "interrupted"
		}
		var bad *badRelease
		if ctx.Err() == nil && errors.As(err, &bad) {
			// Its signed images do not verify: skipped from now on
			// (unless named with --image), as a release that failed
			// to boot is.
			s.st.recordFailure(rel, "its images do not verify: "+err.Error(), u.now())
		}
		if serr := u.store.save(s.st); serr != nil {
			err = errors.Join(err, serr)
		}
		return plan, err
	}
	s.st.Sets[in.String()] = rec
	s.st.Pending.Stage = StageWritten
	s.st.LastAttempt.Outcome = "success"
	if err := u.store.save(s.st); err != nil {
		return plan, err
	}
	failpoint.Hit("state-written")
	// Only now that the state says written: a kill before this leaves the
	// checkpoint to go on from.
	if err := u.store.dropCheckpoint(); err != nil {
		return plan, err
	}
	failpoint.Hit("checkpoint-dropped")
	if !o.Apply {
		return plan, nil
	}
	if err := s.permit(ctx, false); err != nil {
		return plan, err
	}
	if err := s.switchTo(ctx, false); err != nil {
		return plan, err
	}
	if o.Reboot {
		return plan, s.reboot(ctx)
	}
	return plan, nil
}

// staged reports whether the inactive set holds rel, written and
// verified, and not switched to yet.
func (s *session) staged(rel Release) bool {
	in := s.inactive()
	p := s.st.Pending
	rec := s.st.Sets[in.String()]
	a := gptprio.Attrs(s.t, s.l, in)
	return p != nil && p.Stage == StageWritten && p.Release == rel && p.Set == in.String() &&
		rec != nil && rec.Verified && rec.Release == rel && a.Priority() == 0 && !a.Successful()
}

// switchTo is the commit point: one table write gives the inactive set its
// tries and the higher priority.
// With record, the switch is its own attempt (update-apply); otherwise it
// completes the install's.
func (s *session) switchTo(ctx context.Context, record bool) error {
	in := s.inactive()
	rec := s.st.Sets[in.String()]
	p := s.st.Pending
	if p == nil || p.Stage != StageWritten || p.Set != in.String() || rec == nil || !rec.Verified {
		return fmt.Errorf("%w: run `updog update-image` first", ErrNotStaged)
	}
	if !s.verifiedNow {
		if err := s.recheck(ctx, rec); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// What was staged is gone: forget it, so the next update
			// writes the set again instead of failing here for ever.
			delete(s.st.Sets, in.String())
			s.st.Pending = nil
			s.u.store.save(s.st)
			return fmt.Errorf("%w: set %s is no longer what was written and verified (%v); run `updog update` again", ErrNotStaged, in, err)
		}
	}
	tries := s.u.cfg.BootTries
	now := s.u.now().UTC()
	if record || s.st.LastAttempt == nil {
		s.st.LastAttempt = &Attempt{Action: "update-apply", Release: &p.Release, Started: now}
	}
	failpoint.Hit("switch-begin")
	err := s.edit(ctx, func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
		a := gptprio.Attrs(t, l, in)
		if a.Priority() != 0 || a.Successful() || (a.Tries() != 0 && a.Tries() != tries) {
			return nil, fmt.Errorf("%w: the inactive set's boot bits changed since it was written (%v)", ErrNotStaged, a)
		}
		nt, err := gptprio.MarkInactiveValid(t, s.active, tries)
		if err != nil {
			return nil, err
		}
		return gptprio.UpgradeToInactive(nt, s.active)
	})
	s.st.LastAttempt.Ended = s.u.now().UTC()
	if err != nil {
		s.st.LastAttempt.Outcome, s.st.LastAttempt.Error = "failed", err.Error()
		if ctx.Err() != nil {
			s.st.LastAttempt.Outcome = "interrupted"
		}
		s.u.store.save(s.st)
		return fmt.Errorf("switching to set %s: %w", in, err)
	}
	failpoint.Hit("switch-done")
	p.Stage, p.AppliedAt = StageApplied, now
	s.st.Waiting = nil
	s.st.LastAttempt.Outcome = "success"
	return s.u.store.save(s.st)
}

// Apply is update-apply: switch to the set update-image wrote and verified.
func (u *Updater) Apply(ctx context.Context, reboot bool) error {
	s, err := u.openSession(ctx, false, true)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.dual(); err != nil {
		return err
	}
	if err := s.permit(ctx, true); err != nil {
		return err
	}
	if err := s.switchTo(ctx, true); err != nil {
		return err
	}
	if reboot {
		return s.reboot(ctx)
	}
	return nil
}

// Revert is update-revert: undo a switch before its reboot.
func (u *Updater) Revert(ctx context.Context) error {
	s, err := u.openSession(ctx, false, true)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.dual(); err != nil {
		return err
	}
	in := s.inactive()
	next, err := gptprio.Next(s.t)
	a := gptprio.Attrs(s.t, s.l, in)
	if err != nil || next != in || a.Successful() {
		return fmt.Errorf("%w: the next boot is not a switch to set %s", ErrNotPending, in)
	}
	if err := s.edit(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.CancelUpgrade(t, s.active)
	}); err != nil {
		return err
	}
	if p := s.st.Pending; p != nil && p.Set == in.String() && p.Stage == StageApplied {
		p.Stage, p.AppliedAt = StageWritten, time.Time{}
	}
	now := u.now().UTC()
	s.st.LastAttempt = &Attempt{Action: "revert", Started: now, Ended: now, Outcome: "success"}
	return u.store.save(s.st)
}

// Rollback makes the other set boot next, refused when it would not boot.
func (u *Updater) Rollback(ctx context.Context, reboot bool) error {
	s, err := u.openSession(ctx, false, true)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.dual(); err != nil {
		return err
	}
	in := s.inactive()
	if a := gptprio.Attrs(s.t, s.l, in); !a.WillBoot() {
		return fmt.Errorf("%w: set %s: %v", ErrWontBoot, in, a)
	}
	if err := s.permit(ctx, true); err != nil {
		return err
	}
	err = s.edit(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.RollbackToInactive(t, s.active)
	})
	if errors.Is(err, gptprio.ErrInactiveWontBoot) {
		return fmt.Errorf("%w: %w", ErrWontBoot, err)
	}
	if err != nil {
		return err
	}
	now := u.now().UTC()
	s.st.LastAttempt = &Attempt{Action: "rollback", Started: now, Ended: now, Outcome: "success"}
	if rec := s.st.Sets[in.String()]; rec != nil {
		r := rec.Release
		s.st.LastAttempt.Release = &r
	}
	if err := u.store.save(s.st); err != nil {
		return err
	}
	if reboot {
		return s.reboot(ctx)
	}
	return nil
}

// reboot records that the host is rebooting, syncs and reboots.
func (s *session) reboot(ctx context.Context) error {
	now := s.u.now().UTC()
	s.st.Rebooting = &now
	if err := s.u.store.save(s.st); err != nil {
		return err
	}
	sysutil.Sync()
	if err := s.u.o.Reboot(ctx); err != nil {
		// Nothing is rebooting: say so, or status would wait for a
		// reboot that is not coming. The switch stands; a reboot by
		// any means starts the new set.
		s.st.Rebooting = nil
		if serr := s.u.store.save(s.st); serr != nil {
			s.u.log.Warn("could not record that the reboot failed", "err", serr)
		}
		return fmt.Errorf("rebooting: %w (the switch is made: the next boot starts the new set)", err)
	}
	return nil
}
