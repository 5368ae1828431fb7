//! What the kernel's records do not say, added to events: cgroup names and container labels,
//! the OOM post-mortem (kernel log, scores, breakdown) and the reclaim effort before a kill.
pub mod aftermath;
pub mod k8s;
pub mod kill;
pub mod killer;
pub mod kmsg;
pub mod oom_score;
pub mod postmortem;
pub mod recent_stalls;
pub mod snapshot;

use crate::{
    cgroup::{CgroupResolver, CgroupVersion, is_within, memory::CgroupMemory},
    clock::BootClock,
    event::{Event, Kill, Labels, OomKill, Stall},
};

use self::{
    aftermath::Aftermath,
    k8s::{KubeletRoots, Labeler},
    postmortem::PostMortem,
    recent_stalls::RecentStalls,
};

/// Names and explanations for events, with the state that takes: the id → path map, the
/// label cache, the kernel log cursor, the last seconds of stalls.
pub struct Enricher {
    pub cgroups: CgroupResolver,
    version: CgroupVersion,
    labeler: Labeler,
    /// Absent where events are fed from bytes in tests and benchmarks.
    postmortem: Option<PostMortem>,
    recent: RecentStalls,
    aftermath: Aftermath,
}

impl Enricher {
    pub fn new(cgroups: CgroupResolver, version: CgroupVersion) -> Self {
        Self {
            cgroups,
            version,
            labeler: Labeler::new(KubeletRoots::default()),
            postmortem: None,
            recent: RecentStalls::default(),
            aftermath: Aftermath::default(),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Explain OOM kills from the kernel log and snapshots from now on.
    #[must_use]
    pub fn with_postmortem(mut self, postmortem: PostMortem) -> Self {
        self.postmortem = Some(postmortem);
        self
    }

    /// Names pods and containers from the kubelet's files under these roots (the node's own
    /// by default).
    #[must_use]
    pub fn with_kubelet(mut self, roots: KubeletRoots) -> Self {
        self.labeler = Labeler::new(roots);
        self
    }

    /// Container and Kubernetes names of a cgroup path (cached).
    pub fn labels(&mut self, cgroup: &str) -> Option<Labels> {
        self.labeler.labels(cgroup)
    }

    /// Remembers a stall for the reclaim effort before a later kill.
    pub fn saw_stall(
        &mut self,
        boot_ns: u64,
        memcg_id: u64,
        latency_ns: u64,
        pages: u64,
        scanned: u64,
    ) {
        self.recent
            .push(boot_ns, memcg_id, latency_ns, pages, scanned);
    }

    /// Names the event's cgroups; explains a kill.
    pub fn enrich(&mut self, event: &mut Event) {
        match event {
            Event::Stall(stall) => self.stall(stall),
            Event::OomKill(kill) => self.kill(kill),
            Event::Kill(kill) => self.signal(kill),
            Event::OomRisk(_) => {}
        }
    }

    /// A kill waits a second for what it freed; returns kills whose wait is over.
    pub fn hold_kill(&mut self, event: Event) -> Vec<Event> {
        let victim_cgroup = match &event {
            Event::Kill(k) => k.cgroup.clone(),
            Event::OomKill(k) => k.victim_cgroup.clone(),
            _ => None,
        };
        let memory =
            victim_cgroup.map(|c| CgroupMemory::new(self.cgroups.root(), &c, self.version));
        self.aftermath.hold(event, memory)
    }

    /// Kills whose second is over.
    pub fn kills_due(&mut self) -> Vec<Event> {
        if self.aftermath.is_empty() {
            return Vec::new();
        }
        self.aftermath.tick()
    }

    /// Every kill still waiting (the run ends).
    pub fn kills_pending(&mut self) -> Vec<Event> {
        self.aftermath.flush()
    }

    fn signal(&mut self, kill: &mut Kill) {
        kill.cgroup = self.cgroups.path(kill.memcg_id);
        kill.sender_cgroup = self.cgroups.path(kill.sender_memcg_id);
        killer::attribute(kill, self.cgroups.root());
        kill.labels = kill.cgroup.as_deref().and_then(|c| self.labeler.labels(c));
    }

    fn stall(&mut self, stall: &mut Stall) {
        stall.cgroup = self.cgroups.path(stall.memcg_id);
        stall.labels = stall.cgroup.as_deref().and_then(|c| self.labeler.labels(c));
    }

    fn kill(&mut self, kill: &mut OomKill) {
        kill::explain(
            kill,
            &mut self.cgroups,
            self.version,
            self.postmortem.as_mut(),
        );
        kill.labels = kill.cgroup.as_deref().and_then(|c| self.labeler.labels(c));
        kill.victim_labels = kill
            .victim_cgroup
            .as_deref()
            .and_then(|c| self.labeler.labels(c));
        // Stalls in the OOM domain (no domain: anywhere).
        let domain = kill.explanation.oom_cgroup.as_deref();
        let cgroups = &mut self.cgroups;
        kill.reclaim_before = Some(self.recent.effort(BootClock::now_boot_ns(), |id| {
            domain.is_none_or(|domain| is_within(&cgroups.name(id), domain))
        }));
    }
}
