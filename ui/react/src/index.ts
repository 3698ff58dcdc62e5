// @caas/react: React 19 components for CAAS chat on @caas/client. Import "@caas/react/theme.css" once.
export { CaasProvider, useCaas, useConnected, useName } from "./provider.js";
export type { CaasProviderProps } from "./provider.js";
export { ChannelList, Composer, ConnectionStatus, MessageList, PresenceBadge, Thread, TypingIndicator } from "./components.js";
export type { ChannelListProps, ComposerProps, MessageListProps, ThreadProps } from "./components.js";
export { byActivity, useChannel, useChannels, useMessages, usePresence, useThread, useTyping } from "./hooks.js";
export type { ChannelSummary, MessagesApi, PresenceStatus } from "./hooks.js";
export { applyEvent, applyPage, emptyTimeline, visible } from "./timeline.js";
export type { Attachment, MessageView, TimelineState } from "./timeline.js";
export { VirtualList } from "./virtual.js";
export type { VirtualListProps } from "./virtual.js";
