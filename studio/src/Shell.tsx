// The studio's pages: the generator (App), storyboards and fine-tuning, chosen
// by the URL's hash (#/storyboard, #/finetune) so the pages work from any path
// the studio is served at, and a reload stays on the page.

import { useEffect, useState } from "react";
import { App } from "./App";
import { FinetunePage } from "./pages/Finetune";
import { StoryboardPage } from "./pages/Storyboard";
import "./pages/pages.css";

type Page = "generate" | "storyboard" | "finetune";

const pageOf = (hash: string): Page => (hash.startsWith("#/storyboard") ? "storyboard" : hash.startsWith("#/finetune") ? "finetune" : "generate");

export function Shell() {
  const [page, setPage] = useState<Page>(() => pageOf(location.hash));
  useEffect(() => {
    const on = () => setPage(pageOf(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const link = (p: Page, href: string, label: string) => (
    <a href={href} aria-current={page === p ? "page" : undefined} data-testid={`nav-${p}`}>{label}</a>
  );
  return (
    <>
      <nav className="pages" aria-label="Pages">
        {link("generate", "#/", "Generate")}
        {link("storyboard", "#/storyboard", "Storyboard")}
        {link("finetune", "#/finetune", "Fine-tune")}
      </nav>
      {page === "generate" ? <App /> : page === "storyboard" ? <StoryboardPage /> : <FinetunePage />}
    </>
  );
}
