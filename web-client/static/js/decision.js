// The approver's decision on a case. Everything that approves or rejects goes through `decide`,
// because the signing step (电子签章: the approver's signature over the canonical case statement)
// will be inserted here: build the statement, sign, then send the decision with the signature.
import { api } from './core.js';

/** Approves or rejects case `caseId` with `reason`; resolves to the updated case. */
export async function decide(caseId, decision, reason) {
  if (decision !== 'approve' && decision !== 'reject') throw new Error(`unknown decision ${decision}`);
  // Signing step goes here (see docs/web-client.md, "Where the signing step plugs in").
  return api('POST', `/cases/${caseId}/actions/${decision}`, { reason });
}
