//! The reconcile loop: read what should exist ([`desired`]) and what does ([`recorded`] rows,
//! [`observed`] Fly state), decide ([`plan`], pure), act ([`execute`]), and schedule ([`controller`]).

pub mod desired;
pub mod naming;
pub mod observed;
pub mod plan;
pub mod recorded;
pub mod spec;
