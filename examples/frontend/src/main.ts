// The example page: pick a format and filters, create an export, watch its progress, see a
// 400's field errors next to their fields, and download the file. Every call goes through
// openapi-fetch, typed by `api.d.ts`, which openapi-typescript generates from
// spec/openapi.yaml (never edited, never committed): a spec change that breaks this page
// fails its type check (`scripts/frontend-check.sh`).

import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Export = components["schemas"]["Export"];
type ErrorBody = components["schemas"]["ErrorBody"];
type CreateUserExport = components["schemas"]["CreateUserExport"];
type ExportFormat = components["schemas"]["ExportFormat"];
type UserStatus = components["schemas"]["UserStatus"];

/** Where the API is and the key to call it with: `?api=http://127.0.0.1:4010&key=…`. */
const settings = new URLSearchParams(window.location.search);
const api = createClient<paths>({
  baseUrl: settings.get("api") ?? "http://127.0.0.1:4010",
  headers: { Authorization: `Bearer ${settings.get("key") ?? "exk_frontend"}` },
});

/** How often a running export is asked for its progress. */
const POLL_MS = 500;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const form = element<HTMLFormElement>("export-form");
const status = element<HTMLElement>("status");

/** The request the form describes, as the spec types it. */
function request(): CreateUserExport {
  const format = element<HTMLSelectElement>("format").value as ExportFormat;
  const createdAfter = element<HTMLInputElement>("created_after").value;
  const userStatus = element<HTMLSelectElement>("user_status").value;
  const body: CreateUserExport = { format };
  const filters: NonNullable<CreateUserExport["filters"]> = {};
  if (createdAfter) filters.created_after = createdAfter;
  if (userStatus) filters.status = userStatus as UserStatus;
  if (Object.keys(filters).length > 0) body.filters = filters;
  return body;
}

/** Shows each detail of an error next to the field it names, or above the form. */
function showError(error: ErrorBody, httpStatus: number): void {
  clearErrors();
  for (const detail of error.details) {
    const slot = document.querySelector<HTMLElement>(`[data-error-for="${detail.field}"]`);
    const allowed = detail.allowed ? ` (allowed: ${detail.allowed.join(", ")})` : "";
    if (slot) slot.textContent = `${detail.issue}${allowed}`;
  }
  const retry = error.retry_after_seconds ? ` Try again in ${error.retry_after_seconds} s.` : "";
  status.textContent = `${httpStatus}: ${error.message}${retry}`;
  status.dataset.state = "error";
}

function clearErrors(): void {
  for (const slot of document.querySelectorAll<HTMLElement>("[data-error-for]")) {
    slot.textContent = "";
  }
}

function showExport(exported: Export): void {
  const { rows_written, rows_total, percent } = exported.progress;
  status.dataset.state = exported.status;
  status.textContent =
    exported.status === "failed"
      ? `failed: ${exported.error_message ?? "no reason given"}`
      : `${exported.status}: ${rows_written} of ${rows_total} rows (${percent}%)`;
  element<HTMLButtonElement>("download").hidden = exported.status !== "done";
}

let current: string | undefined;

async function create(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  clearErrors();
  try {
    const { data, error, response } = await api.POST("/api/v1/exports/users", { body: request() });
    if (error) return showError(error.error, response.status);
    current = data.export_id;
    await follow(data.export_id);
  } catch (failure) {
    unreachable(failure);
  }
}

/** Polls the export until it stops. */
async function follow(exportId: string): Promise<void> {
  for (;;) {
    const { data, error, response } = await api.GET("/api/v1/exports/users/{export_id}", {
      params: { path: { export_id: exportId } },
    });
    if (error) return showError(error.error, response.status);
    showExport(data);
    if (!["pending", "processing"].includes(data.status)) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function download(): Promise<void> {
  if (!current) return;
  try {
    const { data, error, response } = await api.GET("/api/v1/exports/users/{export_id}/download", {
      params: { path: { export_id: current } },
      parseAs: "blob",
    });
    if (error) return showError(error.error, response.status);
    const name = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") ?? "")?.[1];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(data);
    link.download = name ?? `export-${current}`;
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (failure) {
    unreachable(failure);
  }
}

/** The API did not answer (down, or refused by CORS): a message, not a blank page. */
function unreachable(failure: unknown): void {
  status.dataset.state = "unreachable";
  status.textContent = `The API at ${settings.get("api") ?? "http://127.0.0.1:4010"} could not be reached: ${String(failure)}`;
}

form.addEventListener("submit", (event) => void create(event));
element<HTMLButtonElement>("download").addEventListener("click", () => void download());
