//! The transition table, exhaustively.

mod common;

use flowbalancer_pool::{StateMachine, WorkerState};

#[test]
fn transition_table_is_exactly_the_documented_one() {
    use WorkerState::*;
    let allowed = [
        (Initializing, Ready),
        (Initializing, Terminating),
        (Initializing, Terminated),
        (Ready, Busy),
        (Ready, Degraded),
        (Ready, Terminating),
        (Busy, Ready),
        (Busy, Busy),
        (Busy, Degraded),
        (Busy, Terminating),
        (Degraded, Ready),
        (Degraded, Busy),
        (Degraded, Terminating),
        (Terminating, Terminated),
    ];
    for from in WorkerState::ALL {
        for to in WorkerState::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from} → {to}"
            );
        }
    }
}

#[test]
fn refused_moves_keep_the_state_and_history_is_bounded() {
    let mut machine = StateMachine::new(3);
    machine.transition(WorkerState::Ready, "started").unwrap();
    let error = machine
        .transition(WorkerState::Terminated, "skip")
        .unwrap_err();
    assert_eq!(
        (error.from, error.to),
        (WorkerState::Ready, WorkerState::Terminated)
    );
    assert!(error.to_string().contains("Ready → Terminated"));
    assert_eq!(machine.state(), WorkerState::Ready);
    for _ in 0..5 {
        machine.transition(WorkerState::Busy, "call").unwrap();
        machine.transition(WorkerState::Ready, "done").unwrap();
    }
    assert_eq!(machine.history().len(), 3, "only the last three are kept");
    assert_eq!(machine.history().back().unwrap().reason, "done");
    machine.transition(WorkerState::Terminating, "bye").unwrap();
    machine.transition(WorkerState::Terminated, "gone").unwrap();
    for to in WorkerState::ALL {
        assert!(machine.transition(to, "after death").is_err() || to == WorkerState::Terminated);
    }
}

#[test]
fn every_transition_is_a_tracing_event_with_its_reason() {
    let (guard, events) = common::capture_events();
    let mut machine = StateMachine::new(4).with_owner("hot/w7");
    machine.transition(WorkerState::Ready, "started").unwrap();
    machine.transition(WorkerState::Busy, "call").unwrap();
    machine
        .transition(WorkerState::Degraded, "health check failed")
        .unwrap();
    drop(guard);
    let events: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.fields.clone())
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events[0].contains("worker=hot/w7")
            && events[0].contains("to=Ready")
            && events[0].contains("reason=started"),
        "{}",
        events[0]
    );
    assert!(
        events[2].contains("reason=health check failed"),
        "{}",
        events[2]
    );
}
