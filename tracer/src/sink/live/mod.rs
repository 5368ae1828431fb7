//! The live view: a top-like screen, refreshed every second, when stdout is a terminal.
//! Per cgroup: total stall time, stalls and p99 per kind, fault rates, the last OOM kill;
//! keys sort it and open a cgroup's histograms. It is a sink fed by interval summaries; a
//! render thread owns the terminal so keys answer at once.
use std::{
    collections::BTreeMap,
    io,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::Result;
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table, TableState},
};

use crate::{
    aggregate::{Scope, Summary},
    clock::format_unix_ns,
    event::{Event, Labels},
    pipeline::{RunSummary, Sink},
    sink::Ms,
    term::{escape, escaped},
};

/// Bucket index k holds latencies in [2^k, 2^(k+1)) µs, as the summary rows' log2 buckets.
const BUCKETS: usize = 40;

#[derive(Clone, Debug, Default)]
struct KindStats {
    count: u64,
    total_ns: u64,
    buckets: Vec<u64>,
}

impl KindStats {
    /// Upper bound of the bucket holding quantile `q`, in ns.
    fn quantile_ns(&self, q: f64) -> u64 {
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return ((1u64 << (k + 1)) - 1) * 1_000;
            }
        }
        0
    }
}

#[derive(Clone, Debug, Default)]
struct CgroupRow {
    /// `namespace/pod/container` of a pod's cgroup, shown instead of its path.
    workload: Option<String>,
    kinds: BTreeMap<&'static str, KindStats>,
    faults_per_s: f64,
    major_per_s: f64,
    oom_kills: u64,
}

impl CgroupRow {
    fn stall_ns(&self) -> u64 {
        self.kinds.values().map(|k| k.total_ns).sum()
    }
    fn stalls(&self) -> u64 {
        self.kinds.values().map(|k| k.count).sum()
    }
    fn worst_p99(&self) -> u64 {
        self.kinds
            .values()
            .map(|k| k.quantile_ns(0.99))
            .max()
            .unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    StallTime,
    Stalls,
    P99,
    Faults,
    Name,
}

#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<String, CgroupRow>,
    last_oom: Option<String>,
    /// The machine's kswapd in the last interval: is the node short of memory right now?
    kswapd_awake_pct: f64,
    intervals: u64,
}

impl State {
    fn fold(&mut self, summary: &Summary) {
        self.intervals += 1;
        self.kswapd_awake_pct = summary
            .kswapd
            .as_ref()
            .map_or(0.0, |k| k.awake_pct(summary.period_ns));
        for row in &summary.rows {
            let stats = self
                .rows
                .entry(row.cgroup.clone())
                .or_default()
                .kinds
                .entry(row.kind)
                .or_default();
            stats.count += row.count;
            stats.total_ns += row.total_ns;
            stats.buckets.resize(BUCKETS, 0);
            for (k, bucket) in row.buckets.iter().enumerate().take(BUCKETS) {
                stats.buckets[k] += bucket.count;
            }
        }
        for row in self.rows.values_mut() {
            (row.faults_per_s, row.major_per_s) = (0.0, 0.0);
        }
        for f in &summary.faults {
            let row = self.rows.entry(f.cgroup.clone()).or_default();
            (row.faults_per_s, row.major_per_s) = (f.minor_per_s + f.major_per_s, f.major_per_s);
        }
        for (cgroup, labels) in &summary.labels {
            if let Some(row) = self.rows.get_mut(cgroup) {
                row.workload = labels.workload();
            }
        }
    }

    fn sorted(&self, key: SortKey) -> Vec<(&String, &CgroupRow)> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|(an, a), (bn, b)| {
            match key {
                SortKey::StallTime => b.stall_ns().cmp(&a.stall_ns()),
                SortKey::Stalls => b.stalls().cmp(&a.stalls()),
                SortKey::P99 => b.worst_p99().cmp(&a.worst_p99()),
                SortKey::Faults => b.faults_per_s.total_cmp(&a.faults_per_s),
                SortKey::Name => an.cmp(bn),
            }
            .then_with(|| an.cmp(bn))
        });
        rows
    }
}

/// What the keyboard has chosen.
struct View {
    sort: SortKey,
    table: TableState,
    detail: bool,
}

const KINDS: [&str; 4] = [
    "direct_reclaim",
    "memcg_reclaim",
    "kswapd_wake",
    "throttled",
];

fn draw(frame: &mut Frame, state: &State, view: &mut View) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let last_oom = state.last_oom.as_deref().unwrap_or("none seen");
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "memstall live — {} s, {} cgroups; sorted by {:?}",
                state.intervals,
                state.rows.len(),
                view.sort
            )),
            Line::from(format!(
                "kswapd (whole machine) awake {:.0} % of the last interval · last OOM kill: {last_oom}",
                state.kswapd_awake_pct
            )),
        ]),
        header,
    );
    let rows = state.sorted(view.sort);
    let selected = view
        .table
        .selected()
        .unwrap_or(0)
        .min(rows.len().saturating_sub(1));
    if view.detail {
        if let Some((name, row)) = rows.get(selected) {
            frame.render_widget(
                Paragraph::new(histograms(name, row))
                    .block(Block::bordered().title("histograms (Enter: back)")),
                body,
            );
        }
    } else {
        let mut header_cells = vec!["CGROUP (POD)".to_owned(), "STALL TIME".into()];
        header_cells.extend(KINDS.iter().map(|k| format!("{k} n/p99")));
        header_cells.extend(["FAULTS/S".into(), "MAJOR/S".into(), "OOM".into()]);
        let table_rows = rows.iter().map(|(name, row)| {
            let shown = row.workload.as_deref().unwrap_or(name.as_str());
            let mut cells = vec![escaped(shown), Ms(row.stall_ns()).to_string()];
            cells.extend(KINDS.iter().map(|kind| match row.kinds.get(kind) {
                Some(k) if k.count > 0 => format!("{} / <{}", k.count, Ms(k.quantile_ns(0.99) + 1)),
                _ => "-".into(),
            }));
            cells.extend([
                format!("{:.0}", row.faults_per_s),
                format!("{:.1}", row.major_per_s),
                row.oom_kills.to_string(),
            ]);
            Row::new(cells)
        });
        let mut widths = vec![Constraint::Min(24), Constraint::Length(11)];
        widths.extend([Constraint::Length(22); KINDS.len()]);
        widths.extend([
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(4),
        ]);
        let table = Table::new(table_rows, widths)
            .header(Row::new(header_cells).style(Style::new().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        view.table.select(Some(selected));
        frame.render_stateful_widget(table, body, &mut view.table);
    }
    frame.render_widget(
        Paragraph::new("q quit · ↑↓ select · Enter histograms · sort: t time, s stalls, p p99, f faults, n name"),
        footer,
    );
}

fn histograms(name: &str, row: &CgroupRow) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(escaped(name))];
    if let Some(workload) = &row.workload {
        lines.push(Line::from(format!("pod {}", escape(workload))));
    }
    for (kind, stats) in &row.kinds {
        lines.push(Line::from(format!(
            "{kind}: {} stalls, {} total",
            stats.count,
            Ms(stats.total_ns)
        )));
        let peak = stats.buckets.iter().copied().max().unwrap_or(0).max(1);
        for (k, n) in stats.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
            let bar = "*".repeat(((n * 40).div_ceil(peak)) as usize);
            lines.push(Line::from(format!(
                "{:>10} -> {:<9} µs: {n:<8} |{bar:<40}|",
                if k == 0 { 0 } else { 1u64 << k },
                (1u64 << (k + 1)) - 1
            )));
        }
    }
    lines
}

/// Owns the terminal on its own thread (from the first summary on, so start-up messages and
/// errors print normally): redraws every second and on every key.
pub struct LiveSink {
    state: Arc<Mutex<State>>,
    render: Option<thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Once the terminal could not be taken over (or was given back), nothing more is drawn.
    done: bool,
}

fn locked(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run_terminal(
    mut terminal: DefaultTerminal,
    state: Arc<Mutex<State>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut view = View {
        sort: SortKey::StallTime,
        table: TableState::default(),
        detail: false,
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if terminal
            .draw(|frame| draw(frame, &locked(&state), &mut view))
            .is_err()
        {
            break;
        }
        if !event::poll(Duration::from_millis(250)).unwrap_or(false) {
            continue;
        }
        let Ok(TermEvent::Key(key)) = event::read() else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            // Quit like Ctrl-C: the event loop stops, drains and prints the final summary.
            KeyCode::Char('q') | KeyCode::Esc => unsafe {
                // SAFETY: kill has no memory-safety preconditions.
                libc::kill(libc::getpid(), libc::SIGINT);
            },
            KeyCode::Char('t') => view.sort = SortKey::StallTime,
            KeyCode::Char('s') => view.sort = SortKey::Stalls,
            KeyCode::Char('p') => view.sort = SortKey::P99,
            KeyCode::Char('f') => view.sort = SortKey::Faults,
            KeyCode::Char('n') => view.sort = SortKey::Name,
            KeyCode::Down => view.table.select_next(),
            KeyCode::Up => view.table.select_previous(),
            KeyCode::Enter => view.detail = !view.detail,
            _ => {}
        }
    }
    ratatui::restore();
}

impl LiveSink {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            render: None,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            done: false,
        }
    }

    /// Takes over the terminal (alternate screen, raw mode) until `close`.
    fn start(&mut self) -> io::Result<()> {
        let terminal = ratatui::try_init()?;
        let (state, stop) = (self.state.clone(), self.stop.clone());
        self.render = Some(thread::spawn(move || run_terminal(terminal, state, stop)));
        Ok(())
    }

    fn close(&mut self) {
        self.done = true;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(render) = self.render.take() {
            let _ = render.join();
        }
    }
}

impl Default for LiveSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LiveSink {
    fn drop(&mut self) {
        self.close();
    }
}

impl Sink for LiveSink {
    fn event(&mut self, event: &Event) -> Result<()> {
        if let Event::OomKill(kill) = event {
            let mut state = locked(&self.state);
            let cgroup = kill.victim_cgroup.clone().unwrap_or_else(|| "?".into());
            let workload = kill.victim_labels.as_ref().and_then(Labels::workload);
            state.last_oom = Some(format!(
                "{} {} pid {} in {}",
                format_unix_ns(kill.time_ns),
                escape(&kill.victim_comm),
                kill.victim_pid,
                escape(workload.as_deref().unwrap_or(&cgroup))
            ));
            let row = state.rows.entry(cgroup).or_default();
            row.oom_kills += 1;
            row.workload = row.workload.take().or(workload);
        }
        Ok(())
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        if summary.scope != Scope::Interval {
            // The run is ending: give the screen back before the final summary prints.
            self.close();
            return Ok(());
        }
        locked(&self.state).fold(summary);
        if self.render.is_none()
            && !self.done
            && let Err(err) = self.start()
        {
            log::warn!("live view unavailable ({err}); the summary prints at the end");
            self.done = true;
        }
        Ok(())
    }

    fn finish(&mut self, _run: &RunSummary) -> Result<()> {
        self.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
