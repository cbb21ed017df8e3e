//! A fleet stack's profiles: `x-noco.profiles` in the compose file enables them, and nococtl,
//! the server and the agent load the file alike — the host runs exactly the services without a
//! profile and those of the enabled ones.

use noco_integration_tests::docker::require_docker;
use noco_integration_tests::{Fleet, ServerOptions};

use crate::support::{Prefix, app_stack, apply_converged, running};

#[test]
fn x_noco_profiles_enable_their_services_on_the_hosts() {
    if !require_docker() {
        return;
    }
    let fleet = Fleet::start(ServerOptions::default());
    let prefix = Prefix::new("fprof", &["shop"]);
    fleet.enroll("web-1", "role=web");
    let _agent = fleet.run_agent_with("web-1", &["--project-prefix", &prefix.0]);
    fleet.wait_status("web-1", "online");

    let yaml = format!(
        "{}  debug:\n    image: ${{IMAGE}}\n    profiles: [debug]\n  tools:\n    image: ${{IMAGE}}\n    profiles: [tools]\nx-noco:\n  profiles: [debug]\n",
        app_stack("v1")
    );
    apply_converged(&fleet, &yaml, &["web-1"]);
    let project = prefix.project("shop");
    let mut names = running(&project);
    names.sort();
    assert_eq!(
        names,
        [format!("{project}-app-1"), format!("{project}-debug-1")],
        "tools is not enabled"
    );
}
