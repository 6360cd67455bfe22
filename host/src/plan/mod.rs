//! Plans: the host's model of what a plugin asked for, its validation, and its document form.

pub mod display;
pub mod document;
pub mod model;
pub mod pattern;
pub mod safety;
#[cfg(test)]
pub(crate) mod testing;
mod validate;

pub use model::{
    Action, Condition, Group, Invariant, Item, Location, OnError, Plan, ServiceState, Step,
};
pub use validate::{Grants, ValidationError, Violation, check_relative, cwd_elsewhere, validate};
