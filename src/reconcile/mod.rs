//! The reconcile loop: desired, observe, plan, execute, controller.
