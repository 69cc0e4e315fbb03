//! Graceful shutdown: hand over, then exit.

use super::*;

#[test]
fn shutdown_of_primary_hands_over_then_is_ready_to_exit() {
    let mut h = H::primary(1, cfg());
    h.p.observe(Event::ShutdownRequested, h.now);
    let acts = h.step();
    assert!(hook_of(&acts, HookKind::Demote).is_some());
    assert!(!acts.contains(&Action::ReadyToExit));
    h.finish_hooks(&acts, true);
    let acts = h.step();
    let d = proposals(&acts).into_iter().find_map(|c| match c {
        Command::Demote(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(d, Some(DemoteReason::Shutdown));
    h.commit(&acts);
    let acts = h.step();
    assert_eq!(transfer(&acts), Some(2));
    assert!(!acts.contains(&Action::ReadyToExit));
    h.set_leader(Some(2));
    assert!(h.step().contains(&Action::ReadyToExit));
}

#[test]
fn shutdown_gives_up_handing_over_at_the_deadline() {
    let mut h = H::primary(
        1,
        PolicyConfig {
            shutdown_timeout: Duration::from_secs(1),
            ..cfg()
        },
    );
    h.p.observe(Event::ShutdownRequested, h.now);
    let all = h.settle();
    assert!(!all.contains(&Action::ReadyToExit));
    h.advance(1_000);
    assert!(h.step().contains(&Action::ReadyToExit));
}
