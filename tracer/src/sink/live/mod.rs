//! The live view: a top-like screen, refreshed every second, when stdout is a terminal.
//! Per cgroup: total stall time, stalls and p99 per kind, fault rates, the last OOM kill;
//! keys sort it and open a cgroup's histograms. It is a sink fed by interval summaries; a
//! render thread owns the terminal so keys answer at once.
use std::{
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
    event::Event,
    pipeline::{RunSummary, Sink},
    sink::Ms,
    term::{escape, escaped},
};

mod state;

pub use state::SortKey;
use state::{CgroupRow, State};

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
                "kswapd (whole machine) awake {:.0} % of the last interval · last OOM kill: {last_oom} · last other kill: {}",
                state.kswapd_awake_pct,
                state.last_kill.as_deref().unwrap_or("none seen")
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
        header_cells.extend([
            "FAULTS/S".into(),
            "MAJOR/S".into(),
            "OOM".into(),
            "KILLS".into(),
            "RISK".into(),
        ]);
        let table_rows = rows.iter().map(|(name, row)| {
            let shown = row.workload.as_deref().unwrap_or(name.as_str());
            let mut cells = vec![escaped(shown), Ms(row.stall_ns).to_string()];
            cells.extend(KINDS.iter().map(|kind| match row.kinds.get(kind) {
                Some(k) if k.count > 0 => format!("{} / <{}", k.count, Ms(k.quantile_ns(0.99) + 1)),
                _ => "-".into(),
            }));
            cells.extend([
                format!("{:.0}", row.faults_per_s),
                format!("{:.1}", row.major_per_s),
                row.oom_kills.to_string(),
                row.kills.to_string(),
                row.risk.clone().unwrap_or_else(|| "-".into()),
            ]);
            Row::new(cells)
        });
        let mut widths = vec![Constraint::Min(24), Constraint::Length(11)];
        widths.extend([Constraint::Length(22); KINDS.len()]);
        widths.extend([
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(16),
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
        locked(&self.state).event(event);
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
