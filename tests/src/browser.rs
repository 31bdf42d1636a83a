//! Headless Chromium driven through chromedriver (work in progress).
